package dev.mbyn.payments;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/** Set once by the shutdown hook (SIGTERM/SIGINT) or by the service itself; loops check it and finish. */
final class StopSignal {
    private final CountDownLatch latch = new CountDownLatch(1);
    private volatile String reason = "";

    void set(String why) {
        if (latch.getCount() > 0) {
            reason = why;
            latch.countDown();
        }
    }

    boolean isSet() {
        return latch.getCount() == 0;
    }

    String reason() {
        return reason;
    }

    /** Sleep up to {@code millis}; returns true early when stopped. */
    boolean sleep(long millis) {
        try {
            return latch.await(millis, TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            set("interrupted");
            return true;
        }
    }
}
