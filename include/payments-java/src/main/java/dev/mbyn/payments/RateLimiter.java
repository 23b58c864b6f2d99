package dev.mbyn.payments;

/**
 * Keeps sends at {@code rate} per second on average ({@code null} = unlimited): {@link #acquire()} sleeps
 * until the next slot, waking early when the service is stopping.
 */
final class RateLimiter {
    private final Double rate;
    private final StopSignal stop;
    private final long startNanos = System.nanoTime();
    private long count;

    RateLimiter(Double rate, StopSignal stop) {
        this.rate = rate;
        this.stop = stop;
    }

    void acquire() {
        if (rate == null) {
            return;
        }
        count++;
        long dueNanos = startNanos + (long) (count * 1e9 / rate);
        long waitMillis = (dueNanos - System.nanoTime()) / 1_000_000;
        if (waitMillis > 1) {
            stop.sleep(waitMillis);
        }
    }
}
