package dev.mbyn.payments;

/** Lets a repeated log line through at most once per interval, so one bad input cannot flood the log. */
final class Throttle {
    private final long intervalNanos;
    private long nextNanos = System.nanoTime();
    private long suppressed;

    Throttle(long intervalMillis) {
        this.intervalNanos = intervalMillis * 1_000_000;
    }

    /** Returns -1 to stay quiet, else how many lines were suppressed since the last one let through. */
    synchronized long pass() {
        long now = System.nanoTime();
        if (now - nextNanos < 0) {
            suppressed++;
            return -1;
        }
        nextNanos = now + intervalNanos;
        long out = suppressed;
        suppressed = 0;
        return out;
    }
}
