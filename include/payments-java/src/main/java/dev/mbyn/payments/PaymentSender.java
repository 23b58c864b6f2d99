package dev.mbyn.payments;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.node.ObjectNode;

/**
 * Turns a {@link Payment} into an envelope, validates it against the catalog schema and sends it.
 *
 * <p>Producer: idempotent, {@code acks=all}, lz4, {@code linger.ms=20} and 512 KiB batches ({@link #SETTINGS},
 * the Python producers' settings) — safe and fast. {@link #send} does not wait for the broker (only for the first metadata, or while the 64 MiB
 * buffer is full); delivery callbacks update the counters and the order's {@link Ticket}. An invalid
 * payment is counted and logged, never sent. The same producer writes dead letters
 * ({@link #sendDeadLetter}) for orders records the service cannot use.
 */
final class PaymentSender implements AutoCloseable {
    static final String SOURCE = "payments-service";
    private static final Logger LOG = LoggerFactory.getLogger("payments-service");
    /**
     * The producer settings the benchmarks state, the same as the Python producers'
     * ({@code mbyn.kafka.producer.PRODUCER_DEFAULTS}); printed in the summary line.
     */
    static final Map<String, String> SETTINGS = settings();
    private static final DateTimeFormatter EVENT_TIME =
            DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

    private final KafkaProducer<byte[], byte[]> producer;
    private final String topic;
    private final String deadLettersTopic;
    private final String consumerGroup;
    private final TopicSchema schema;
    private final ObjectMapper mapper;
    private final Counters counters;
    private final Throttle invalidLog = new Throttle(10_000);
    private final Throttle failureLog = new Throttle(10_000);
    private final Throttle deadLetterLog = new Throttle(10_000);

    PaymentSender(Options options, TopicSchema schema, ObjectMapper mapper, Counters counters) {
        Properties config = options.clientConfig();
        config.put(ProducerConfig.CLIENT_ID_CONFIG, SOURCE);
        config.putAll(SETTINGS);
        config.put(ProducerConfig.BUFFER_MEMORY_CONFIG, String.valueOf(64L * 1024 * 1024));
        config.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "120000");
        // The same producer sends dead letters: an orders record of up to the broker's 1 MiB plus the dlq.*
        // headers must fit (dead-letters accepts 4 MiB, include/topics.yaml); the default 1 MiB would refuse it.
        config.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, String.valueOf(4 * 1024 * 1024));
        config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        this.producer = new KafkaProducer<>(config);
        this.topic = options.paymentsTopic();
        this.deadLettersTopic = options.deadLettersTopic();
        this.consumerGroup = options.groupId();
        this.schema = schema;
        this.mapper = mapper;
        this.counters = counters;
    }

    /**
     * Send {@code copies} copies of the payment's event (1 normally, 2 for a duplicate, fewer when the
     * {@code --count} budget is nearly spent). Returns how many records were handed to the producer
     * (0 if the payment was invalid). The ticket, if any, expects one acknowledgement per record.
     */
    int send(Payment payment, int copies, Ticket ticket) {
        ObjectNode envelope = envelope(payment);
        List<String> violations = schema.violations(envelope);
        if (!violations.isEmpty()) {
            counters.invalid.incrementAndGet();
            long suppressed = invalidLog.pass();
            if (suppressed >= 0) {
                LOG.warn("invalid payment not sent (order {}): {}{}", payment.orderId(),
                        String.join("; ", violations.subList(0, Math.min(5, violations.size()))),
                        suppressed > 0 ? " (" + suppressed + " similar lines suppressed)" : "");
            }
            return 0;
        }
        byte[] value = mapper.writeValueAsBytes(envelope);
        if (ticket != null) {
            ticket.expect(copies);
        }
        for (int i = 0; i < copies; i++) {
            ProducerRecord<byte[], byte[]> record =
                    new ProducerRecord<>(topic, payment.key().getBytes(StandardCharsets.UTF_8), value);
            record.headers().add("source", SOURCE.getBytes(StandardCharsets.UTF_8));
            record.headers().add("trace_id", payment.traceId().getBytes(StandardCharsets.UTF_8));
            counters.firstSend.compareAndSet(0, System.nanoTime());
            try {
                producer.send(record, (metadata, error) -> onDelivery(error, ticket, topic));
            } catch (RuntimeException e) {
                // Errors the producer throws instead of passing to the callback (closed, interrupted, serializer).
                onDelivery(e, ticket, topic);
            }
            counters.sent.incrementAndGet();
        }
        counters.countSent(payment);
        if (copies > 1) {
            counters.duplicates.addAndGet(copies - 1);
        }
        return copies;
    }

    /**
     * Dead-letter a consumed record to {@code <prefix>dead-letters} (see {@link DeadLetters}). The ticket
     * expects the broker's acknowledgement, so the record's offset is committed only once the dead letter
     * is stored; a failed delivery stops the service like a failed payment.
     */
    void sendDeadLetter(ConsumerRecord<byte[], byte[]> record, PoisonRecordException error, Ticket ticket) {
        ProducerRecord<byte[], byte[]> deadLetter = DeadLetters.of(record, error, deadLettersTopic, consumerGroup);
        long suppressed = deadLetterLog.pass();
        if (suppressed >= 0) {
            LOG.warn("dead-lettered {}-{}@{} ({}): {}{}", record.topic(), record.partition(), record.offset(),
                    error.reason(), DeadLetters.cut(String.valueOf(error.getMessage()), 300),
                    suppressed > 0 ? " (" + suppressed + " similar lines suppressed)" : "");
        }
        ticket.expect(1);
        try {
            producer.send(deadLetter, (metadata, failure) -> onDelivery(failure, ticket, deadLettersTopic));
        } catch (RuntimeException e) {
            onDelivery(e, ticket, deadLettersTopic);
        }
        counters.deadLettered.incrementAndGet();
    }

    private void onDelivery(Exception error, Ticket ticket, String to) {
        if (error == null) {
            (to.equals(topic) ? counters.delivered : counters.deadLettersDelivered).incrementAndGet();
            if (ticket != null) {
                ticket.acknowledged();
            }
            return;
        }
        counters.failed.incrementAndGet();
        if (ticket != null) {
            ticket.failed();
        }
        long suppressed = failureLog.pass();
        if (suppressed >= 0) {
            LOG.error("record not delivered to {}: {}{}", to, error.toString(),
                    suppressed > 0 ? " (" + suppressed + " similar lines suppressed)" : "");
        }
    }

    ObjectNode envelope(Payment payment) {
        ObjectNode envelope = mapper.createObjectNode();
        envelope.put("event_id", payment.eventId());
        envelope.put("event_type", payment.eventType());
        envelope.put("schema_version", schema.schemaVersion());
        envelope.put("event_time", EVENT_TIME.format(Instant.now()));
        envelope.put("source", SOURCE);
        envelope.put("trace_id", payment.traceId());
        ObjectNode payload = envelope.putObject("payload");
        payload.put("payment_id", payment.paymentId());
        payload.put("order_id", payment.orderId());
        payload.put("amount", payment.amount());
        payload.put("currency", payment.currency());
        payload.put("status", payment.status());
        payload.put("method", payment.method());
        return envelope;
    }

    private static Map<String, String> settings() {
        Map<String, String> settings = new LinkedHashMap<>();
        settings.put(ProducerConfig.ACKS_CONFIG, "all");
        settings.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        settings.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        settings.put(ProducerConfig.LINGER_MS_CONFIG, "20");
        settings.put(ProducerConfig.BATCH_SIZE_CONFIG, String.valueOf(512 * 1024));
        return Collections.unmodifiableMap(settings);
    }

    /** Wait until every record sent so far is acknowledged or has failed. */
    void flush() {
        producer.flush();
    }

    @Override
    public void close() {
        producer.close();
    }

    /** Close without waiting for anything in flight (the self-check's producer never had a broker). */
    void abandon() {
        producer.close(java.time.Duration.ZERO);
    }
}
