package dev.mbyn.payments;

import java.math.BigDecimal;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.databind.ObjectMapper;

/**
 * {@code --check}: everything the service does at start except talking to a broker — the catalog loads,
 * a planned payment of every kind passes the catalog schema, the Kafka clients can be created.
 *
 * <p>The build runs it once with {@code -XX:ArchiveClassesAtExit} to record a class-data-sharing archive,
 * which roughly halves the service's start-up CPU time (see README, "Start-up").
 */
final class SelfCheck {
    private static final Logger LOG = LoggerFactory.getLogger("payments-service");

    private SelfCheck() {
    }

    static int run(Options options, PaymentSchema schema, ObjectMapper mapper) {
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
            Properties config = options.clientConfig();
            config.put(ConsumerConfig.GROUP_ID_CONFIG, options.groupId());
            config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            new KafkaConsumer<String, byte[]>(config).close();
            if (seen.size() < 6) {
                LOG.error("self-check: the planner never produced some kinds of payment; saw only {}", seen);
                return 2;
            }
            LOG.info("self-check passed: {} planned payments of every kind valid, Kafka clients created", checked);
            return 0;
        } finally {
            sender.abandon();
        }
    }
}
