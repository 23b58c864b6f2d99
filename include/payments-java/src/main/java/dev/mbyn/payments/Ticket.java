package dev.mbyn.payments;

import java.util.concurrent.atomic.AtomicInteger;

/**
 * The work one consumed order record caused: complete when every payment planned for it (late ones
 * included) was acknowledged by the broker. Its offset may be committed only then.
 *
 * <p>Besides one reference per record in flight, a ticket counts "holds": it starts with one, the
 * planning hold, so it cannot look complete while payments are still being planned, and a late payment
 * adds one until it is sent. {@link #release()} drops a hold. A ticket whose planning hold is never
 * released (the {@code --count} budget ran out half-way) is never complete: the next run redoes that order.
 */
final class Ticket {
    final long offset;
    private final AtomicInteger outstanding = new AtomicInteger(1);
    private volatile boolean failed;

    Ticket(long offset) {
        this.offset = offset;
    }

    void hold() {
        outstanding.incrementAndGet();
    }

    void release() {
        outstanding.decrementAndGet();
    }

    void expect(int records) {
        outstanding.addAndGet(records);
    }

    void acknowledged() {
        outstanding.decrementAndGet();
    }

    void failed() {
        failed = true;
        outstanding.decrementAndGet();
    }

    boolean isComplete() {
        return outstanding.get() == 0 && !failed;
    }
}
