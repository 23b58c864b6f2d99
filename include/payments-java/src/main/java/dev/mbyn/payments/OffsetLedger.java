package dev.mbyn.payments;

import java.util.ArrayDeque;
import java.util.Collection;
import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

/**
 * Per partition, the tickets of consumed orders in offset order; says which offsets are safe to commit.
 *
 * <p>The committable offset of a partition is one past the last ticket of its longest complete prefix:
 * an order whose payment is still late, in flight or failed holds back every later offset of its
 * partition. Used by the consumer thread only (tickets themselves are updated by callbacks).
 */
final class OffsetLedger {
    private final Map<TopicPartition, ArrayDeque<Ticket>> tickets = new HashMap<>();

    Ticket track(TopicPartition partition, long offset) {
        Ticket ticket = new Ticket(offset);
        tickets.computeIfAbsent(partition, p -> new ArrayDeque<>()).addLast(ticket);
        return ticket;
    }

    /** Offsets that moved since the last call ({@code only}: these partitions, null = all), for {@code commitSync}. */
    Map<TopicPartition, OffsetAndMetadata> committable(Collection<TopicPartition> only) {
        Map<TopicPartition, OffsetAndMetadata> out = new HashMap<>();
        for (Map.Entry<TopicPartition, ArrayDeque<Ticket>> entry : tickets.entrySet()) {
            if (only != null && !only.contains(entry.getKey())) {
                continue;
            }
            ArrayDeque<Ticket> queue = entry.getValue();
            long next = -1;
            while (!queue.isEmpty() && queue.peekFirst().isComplete()) {
                next = queue.pollFirst().offset + 1;
            }
            if (next >= 0) {
                out.put(entry.getKey(), new OffsetAndMetadata(next));
            }
        }
        return out;
    }

    /** Partitions taken away by a rebalance: their progress is the new owner's business now. */
    void forget(Collection<TopicPartition> partitions) {
        partitions.forEach(tickets::remove);
    }
}
