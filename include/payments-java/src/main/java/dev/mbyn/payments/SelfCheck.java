package dev.mbyn.payments;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.node.ObjectNode;

/**
 * {@code --check}: everything the service does at start except talking to a broker — the catalog loads,
 * a planned payment of every kind passes the catalog schema, the orders codec tells a good order from a
 * bad one, the Kafka clients can be created.
 *
 * <p>The build runs it once with {@code -XX:ArchiveClassesAtExit} to record a class-data-sharing archive,
 * which roughly halves the service's start-up CPU time (see README, "Start-up").
 */
final class SelfCheck {
    private static final Logger LOG = LoggerFactory.getLogger("payments-service");

    private SelfCheck() {
    }

    static int run(Options options, TopicSchema schema, RecordCodec orders, ObjectMapper mapper) {
        Counters counters = new Counters();
        PaymentSender sender = new PaymentSender(options, schema, mapper, counters);
        try {
            int checked = 0;
            Set<String> seen = new HashSet<>();
            // Until every kind (authorized, declined, mismatched, orphan, late, duplicate) has come up.
            for (int n = 0; n < 10_000 && seen.size() < 6; n++) {
                Order order = new Order("O-CHECK-" + n, BigDecimal.valueOf(1999 + n, 2), "EUR",
                        PaymentPlanner.uuid("check-trace:" + n));
                for (Payment payment : PaymentPlanner.plan(order)) {
                    List<String> violations = schema.violations(sender.envelope(payment));
                    if (!violations.isEmpty()) {
                        LOG.error("self-check: a planned {} payment violates the catalog schema: {}", payment.kind(),
                                violations);
                        return 2;
                    }
                    checked++;
                    seen.add(payment.kind().name());
                    if (payment.delayMs() > 0) {
                        seen.add("late");
                    }
                    if (payment.copies() > 1) {
                        seen.add("duplicate");
                    }
                }
            }
            String problem = checkOrdersCodec(orders, mapper);
            if (problem != null) {
                LOG.error("self-check: {}", problem);
                return 2;
            }
            Properties config = options.clientConfig();
            config.put(ConsumerConfig.GROUP_ID_CONFIG, options.groupId());
            config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            new KafkaConsumer<byte[], byte[]>(config).close();
            if (seen.size() < 6) {
                LOG.error("self-check: the planner never produced some kinds of payment; saw only {}", seen);
                return 2;
            }
            LOG.info("self-check passed: {} planned payments of every kind valid, orders codec works, Kafka clients "
                    + "created", checked);
            return 0;
        } finally {
            sender.abandon();
        }
    }

    /** The orders codec accepts a well-formed order and dead-letters a broken one; null when it does, else why not. */
    private static String checkOrdersCodec(RecordCodec orders, ObjectMapper mapper) {
        ObjectNode order = mapper.createObjectNode();
        order.put("event_id", PaymentPlanner.uuid("check-order"));
        order.put("event_type", "order_placed");
        order.put("schema_version", 1);
        order.put("event_time", "2026-01-01T00:00:00.000Z");
        order.put("source", "payments-check");
        ObjectNode payload = order.putObject("payload");
        payload.put("order_id", "O-CHECK");
        payload.put("customer_id", "C-CHECK");
        payload.put("session_id", "S-CHECK");
        payload.put("country", "DE");
        payload.put("currency", "EUR");
        payload.put("amount", new BigDecimal("19.99"));
        ObjectNode item = payload.putArray("items").addObject();
        item.put("sku", "SKU-CHECK");
        item.put("category", "books");
        item.put("quantity", 1);
        item.put("unit_price", new BigDecimal("19.99"));
        byte[] key = "O-CHECK".getBytes(StandardCharsets.UTF_8);
        try {
            orders.decode(key, mapper.writeValueAsBytes(order));
        } catch (PoisonRecordException e) {
            return "the orders codec refuses a well-formed order (" + e.reason() + "): " + e.getMessage();
        }
        payload.put("currency", "XXX");
        try {
            orders.decode(key, mapper.writeValueAsBytes(order));
            return "the orders codec accepts an order with currency XXX";
        } catch (PoisonRecordException e) {
            return PoisonRecordException.SCHEMA_VIOLATION.equals(e.reason()) ? null
                    : "an order with currency XXX got " + e.reason() + ", not schema_violation";
        }
    }
}
