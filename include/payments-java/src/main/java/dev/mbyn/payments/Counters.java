package dev.mbyn.payments;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * What the service did, shared between the main loop and the producer's delivery callbacks (thread-safe).
 *
 * <p>{@code sent} counts payment records handed to the producer (a duplicate counts twice);
 * {@code delivered} comes from the payments' delivery callbacks, {@code failed} from those of payments and dead letters;
 * {@code invalid} payments failed the catalog schema and were not sent. {@code deadLettered} counts orders
 * records handed to the producer as dead letters, {@code deadLettersDelivered} those the broker stored.
 * The per-kind counters count payments sent, once each.
 */
final class Counters {
    final AtomicLong sent = new AtomicLong();
    final AtomicLong delivered = new AtomicLong();
    final AtomicLong failed = new AtomicLong();
    final AtomicLong invalid = new AtomicLong();
    final AtomicLong orders = new AtomicLong();
    final AtomicLong deadLettered = new AtomicLong();
    final AtomicLong deadLettersDelivered = new AtomicLong();
    final AtomicLong authorized = new AtomicLong();
    final AtomicLong declined = new AtomicLong();
    final AtomicLong mismatched = new AtomicLong();
    final AtomicLong late = new AtomicLong();
    final AtomicLong lateSentEarly = new AtomicLong();
    final AtomicLong duplicates = new AtomicLong();
    final AtomicLong orphans = new AtomicLong();
    final AtomicLong commits = new AtomicLong();
    /** {@link System#nanoTime()} of the first record handed to the producer (0: none yet). */
    final AtomicLong firstSend = new AtomicLong();

    void countSent(Payment payment) {
        switch (payment.kind()) {
            case AUTHORIZED -> authorized.incrementAndGet();
            case DECLINED -> declined.incrementAndGet();
            case MISMATCHED -> mismatched.incrementAndGet();
            case ORPHAN -> orphans.incrementAndGet();
            default -> throw new IllegalStateException("unknown payment kind " + payment.kind());
        }
        if (payment.delayMs() > 0) {
            late.incrementAndGet();
        }
    }

    String line() {
        return "orders=" + orders.get() + " sent=" + sent.get() + " delivered=" + delivered.get() + " failed="
                + failed.get() + " invalid=" + invalid.get() + " dead_lettered=" + deadLettered.get();
    }

    /** Seconds from the first send to {@code nanoTime} (0 if nothing was sent): the producing time alone. */
    double sendSeconds(long nanoTime) {
        long first = firstSend.get();
        return first == 0 ? 0.0 : (nanoTime - first) / 1e9;
    }

    /**
     * The summary printed as the last stdout line, in the shape of the Python producers' summaries.
     * {@code seconds} is the whole run (the broker wait included); {@code send_seconds} runs from the first send
     * to the end of the final flush; {@code producer_settings} are the producer's stated settings.
     */
    Map<String, Object> summary(String producer, String mode, String stoppedBy, double seconds, double sendSeconds,
                                Map<String, String> producerSettings) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("producer", producer);
        out.put("mode", mode);
        out.put("sent", sent.get());
        out.put("delivered", delivered.get());
        out.put("failed", failed.get());
        out.put("invalid", invalid.get());
        out.put("orders", orders.get());
        out.put("dead_lettered", deadLettered.get());
        out.put("dead_letters_delivered", deadLettersDelivered.get());
        out.put("authorized", authorized.get());
        out.put("declined", declined.get());
        out.put("mismatched", mismatched.get());
        out.put("late", late.get());
        out.put("late_sent_early", lateSentEarly.get());
        out.put("duplicates", duplicates.get());
        out.put("orphans", orphans.get());
        out.put("commits", commits.get());
        out.put("stopped_by", stoppedBy);
        out.put("seconds", Math.round(seconds * 100) / 100.0);
        out.put("send_seconds", Math.round(sendSeconds * 1000) / 1000.0);
        out.put("producer_settings", producerSettings);
        return out;
    }
}
