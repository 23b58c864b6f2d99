package dev.mbyn.payments;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The main mode: consume orders, emit payments, commit what is done.
 *
 * <p>Consumer group {@code <prefix>payments-service}, auto-commit off, {@code read_committed}, starting
 * from the earliest offset when the group has none. Each consumed record gets a {@link Ticket}; offsets are
 * committed (synchronously, about once a second and on exit) only up to the last order all of whose
 * payments — late ones included — the broker acknowledged. At-least-once: after a crash the uncommitted
 * orders are redone, and their payments carry the same event ids as before.
 *
 * <p>A record that is not a usable order goes to {@code <prefix>dead-letters} with the reason in
 * {@code dlq.*} headers ({@link DeadLetters}); its offset is committed only after the broker acknowledged
 * the dead letter, so no record is lost between the two topics.
 */
final class OrderPipeline {
    private static final Logger LOG = LoggerFactory.getLogger("payments-service");
    private static final long COMMIT_EVERY_MS = 1_000;
    private static final long PROGRESS_EVERY_MS = 5_000;
    private static final int LATE_CAPACITY = 10_000;

    private final Options options;
    private final PaymentSender sender;
    private final RecordCodec codec;
    private final Counters counters;
    private final StopSignal stop;
    private final OffsetLedger ledger = new OffsetLedger();
    private final LateQueue late = new LateQueue(LATE_CAPACITY);
    private long budget;
    /** Idle time (--idle-exit) counts from the first assignment, then from the last order or rebalance. */
    private boolean assigned;
    private long activeAt;

    OrderPipeline(Options options, PaymentSender sender, RecordCodec codec, Counters counters, StopSignal stop) {
        this.options = options;
        this.sender = sender;
        this.codec = codec;
        this.counters = counters;
        this.stop = stop;
        this.budget = options.count() == null ? Long.MAX_VALUE : options.count();
    }

    /** Run until stopped, a limit is reached or a delivery failed; returns why it stopped. */
    String run() {
        RateLimiter limiter = new RateLimiter(options.rate(), stop);
        long started = System.nanoTime();
        long deadline = options.durationSeconds() == null ? Long.MAX_VALUE
                : started + (long) (options.durationSeconds() * 1e9);
        long nextCommit = started + COMMIT_EVERY_MS * 1_000_000;
        long nextProgress = started + PROGRESS_EVERY_MS * 1_000_000;
        String stoppedBy;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerConfig())) {
            consumer.subscribe(List.of(options.ordersTopic()), new Rebalance(consumer));
            LOG.info("consuming {} as group {}, producing to {}", options.ordersTopic(), options.groupId(),
                    options.paymentsTopic());
            while (true) {
                long now = System.nanoTime();
                if (stop.isSet()) {
                    stoppedBy = stop.reason();
                    break;
                }
                if (now - deadline >= 0) {
                    stoppedBy = "duration";
                    break;
                }
                if (budget <= 0) {
                    stoppedBy = "count";
                    break;
                }
                if (counters.failed.get() > 0) {
                    stoppedBy = "delivery_failed";
                    break;
                }
                if (options.idleExitSeconds() != null && assigned && late.isEmpty()
                        && now - activeAt >= (long) (options.idleExitSeconds() * 1e9)) {
                    stoppedBy = "idle";
                    break;
                }
                for (LateQueue.Held held : late.due()) {
                    sendHeld(held, limiter);
                }
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(late.millisUntilNext(200)));
                for (ConsumerRecord<byte[], byte[]> record : records) {
                    activeAt = System.nanoTime();
                    if (!handle(record, limiter) || budget <= 0 || stop.isSet()) {
                        break;  // the rest of this batch stays uncommitted and is redone by the next run
                    }
                }
                now = System.nanoTime();
                if (now - nextCommit >= 0) {
                    commit(consumer, null);
                    nextCommit = now + COMMIT_EVERY_MS * 1_000_000;
                }
                if (now - nextProgress >= 0) {
                    double seconds = (now - started) / 1e9;
                    LOG.info("{} ({} payments/s)", counters.line(), Math.round(counters.sent.get() / seconds));
                    nextProgress = now + PROGRESS_EVERY_MS * 1_000_000;
                }
            }
            LOG.info("stopping ({}): sending held payments, flushing, committing", stoppedBy);
            for (LateQueue.Held held : late.drain()) {
                counters.lateSentEarly.incrementAndGet();
                sendHeld(held, null);
            }
            sender.flush();
            commit(consumer, null);
        }
        return stoppedBy;
    }

    /**
     * Plan and send (or hold) one order's payments; false when the budget ran out half-way. A record that is
     * not a usable order ({@link RecordCodec}'s verdict, or anything that goes wrong planning it) is
     * dead-lettered instead; its ticket then waits for the dead letter's acknowledgement.
     */
    private boolean handle(ConsumerRecord<byte[], byte[]> record, RateLimiter limiter) {
        Ticket ticket = ledger.track(new TopicPartition(record.topic(), record.partition()), record.offset());
        List<Payment> payments;
        try {
            payments = plan(record);
        } catch (PoisonRecordException e) {
            sender.sendDeadLetter(record, e, ticket);
            ticket.release();
            return true;
        }
        counters.orders.incrementAndGet();
        for (Payment payment : payments) {
            int copies = (int) Math.min(payment.copies(), budget);
            if (copies <= 0) {
                return false;
            }
            if (payment.delayMs() > 0 && copies == payment.copies()) {
                budget -= copies;  // reserved now, so --count N never sends more than N
                ticket.hold();  // the order stays open until its late payment is sent and acknowledged
                LateQueue.Held early = late.hold(payment, ticket);
                if (early != null) {
                    counters.lateSentEarly.incrementAndGet();
                    sendHeld(early, limiter);
                }
                continue;
            }
            budget -= send(payment, copies, ticket, limiter);
            if (copies < payment.copies()) {
                return false;
            }
        }
        ticket.release();
        return true;
    }

    /** The payments an orders record calls for; PoisonRecordException when it is no usable order. */
    private List<Payment> plan(ConsumerRecord<byte[], byte[]> record) throws PoisonRecordException {
        try {
            return PaymentPlanner.plan(Order.of(codec.decode(record.key(), record.value())));
        } catch (RuntimeException e) {
            // A bug or a case nobody foresaw: the data must not stop the service (the record is kept on dead-letters).
            throw new PoisonRecordException(PoisonRecordException.UNEXPECTED_ERROR, e.toString(), e);
        }
    }

    /** Returns how many records were sent (0 if the payment was invalid, which costs no budget). */
    private int send(Payment payment, int copies, Ticket ticket, RateLimiter limiter) {
        if (limiter != null) {
            for (int i = 0; i < copies; i++) {
                limiter.acquire();
            }
        }
        return sender.send(payment, copies, ticket);
    }

    /** Send a late payment (its copies were reserved from the budget when held) and drop its hold. */
    private void sendHeld(LateQueue.Held held, RateLimiter limiter) {
        int copies = held.payment().copies();
        if (send(held.payment(), copies, held.ticket(), limiter) == 0) {
            budget += copies;  // invalid: nothing was sent, give the reservation back
        }
        held.ticket().release();
    }

    private void commit(KafkaConsumer<byte[], byte[]> consumer, Collection<TopicPartition> only) {
        Map<TopicPartition, OffsetAndMetadata> offsets = ledger.committable(only);
        if (offsets.isEmpty()) {
            return;
        }
        try {
            consumer.commitSync(offsets);
            counters.commits.incrementAndGet();
        } catch (KafkaException e) {
            // e.g. a rebalance in progress: the orders are redone by the partition's next owner, which is
            // harmless (same event ids), so keep going rather than stop the service.
            LOG.warn("offset commit failed, will retry with the next commit: {}", e.toString());
        }
    }

    private Properties consumerConfig() {
        Properties config = options.clientConfig();
        config.put(ConsumerConfig.GROUP_ID_CONFIG, options.groupId());
        config.put(ConsumerConfig.CLIENT_ID_CONFIG, PaymentSender.SOURCE);
        config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        config.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // A rate limit slows each batch down; keep a batch well inside max.poll.interval.ms.
        int maxPoll = options.rate() == null ? 500 : (int) Math.max(1, Math.min(500, options.rate()));
        config.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, String.valueOf(maxPoll));
        config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return config;
    }

    /** Commits finished work of partitions taken away, and forgets them. */
    private final class Rebalance implements ConsumerRebalanceListener {
        private final KafkaConsumer<byte[], byte[]> consumer;

        Rebalance(KafkaConsumer<byte[], byte[]> consumer) {
            this.consumer = consumer;
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            if (!partitions.isEmpty()) {
                commit(consumer, partitions);
                ledger.forget(partitions);
            }
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> partitions) {
            ledger.forget(partitions);
        }

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            List<Integer> numbers = new ArrayList<>();
            partitions.forEach(p -> numbers.add(p.partition()));
            assigned = true;
            activeAt = System.nanoTime();
            LOG.info("assigned partitions {} of {}", numbers, options.ordersTopic());
        }
    }
}
