package dev.mbyn.payments;

import java.util.ArrayList;
import java.util.List;
import java.util.PriorityQueue;

/**
 * Late payments waiting for their time, earliest first, bounded to {@code capacity} entries.
 *
 * <p>When full, {@link #hold} hands back the earliest entry to send at once rather than blocking the
 * consumer (the payment is then less late than planned; counted as {@code late_sent_early}). Memory
 * therefore stays bounded whatever the order rate.
 */
final class LateQueue {
    /** A payment held back, with the ticket of the order it belongs to. */
    record Held(long dueNanos, Payment payment, Ticket ticket, long sequence) {
    }

    private final PriorityQueue<Held> queue = new PriorityQueue<>(
            (a, b) -> a.dueNanos != b.dueNanos ? Long.compare(a.dueNanos, b.dueNanos) : Long.compare(a.sequence, b.sequence));
    private final int capacity;
    private long sequence;

    LateQueue(int capacity) {
        this.capacity = capacity;
    }

    /** Hold a payment; returns an entry that must be sent now because the queue was full, else null. */
    Held hold(Payment payment, Ticket ticket) {
        queue.add(new Held(System.nanoTime() + payment.delayMs() * 1_000_000, payment, ticket, sequence++));
        return queue.size() > capacity ? queue.poll() : null;
    }

    List<Held> due() {
        List<Held> out = new ArrayList<>();
        long now = System.nanoTime();
        while (!queue.isEmpty() && queue.peek().dueNanos - now <= 0) {
            out.add(queue.poll());
        }
        return out;
    }

    List<Held> drain() {
        List<Held> out = new ArrayList<>(queue);
        out.sort((a, b) -> Long.compare(a.sequence, b.sequence));
        queue.clear();
        return out;
    }

    /** Milliseconds until the earliest entry is due (0 if one is due, {@code ceiling} if empty). */
    long millisUntilNext(long ceiling) {
        if (queue.isEmpty()) {
            return ceiling;
        }
        return Math.max(0, Math.min(ceiling, (queue.peek().dueNanos - System.nanoTime()) / 1_000_000));
    }

    boolean isEmpty() {
        return queue.isEmpty();
    }
}
