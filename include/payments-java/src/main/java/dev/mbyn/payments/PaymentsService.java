package dev.mbyn.payments;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import tools.jackson.core.StreamWriteFeature;
import tools.jackson.databind.DeserializationFeature;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.json.JsonMapper;

/**
 * Entry point of the payments service: {@code java -jar payments-service.jar [options]} (see {@link Options}).
 *
 * <p>Consumes {@code <prefix>orders} and emits payment outcomes to {@code <prefix>payments}
 * ({@link OrderPipeline}), or with {@code --synthetic} generates payment events for benchmarks
 * ({@link SyntheticLoad}). SIGTERM / SIGINT run a shutdown hook that stops the loop and waits for it to
 * send what is pending, flush, commit and print its summary; the process then exits 0 (1 if a payment
 * could not be delivered, 2 on a usage or catalog error).
 *
 * <p>The last stdout line is one JSON object of counts, like the Python producers':
 * {@code {"producer": "payments-service", "sent": .., "delivered": .., "failed": .., "invalid": .., ...}}.
 */
public final class PaymentsService {
    private static final Logger LOG = LoggerFactory.getLogger("payments-service");
    /** How long the shutdown hook lets the main loop finish (flush waits up to the delivery timeout). */
    private static final long SHUTDOWN_WAIT_SECONDS = 150;

    private PaymentsService() {
    }

    public static void main(String[] args) {
        for (String arg : args) {
            if ("-h".equals(arg) || "--help".equals(arg)) {
                System.out.println(Options.USAGE);
                return;
            }
        }
        Options options;
        try {
            options = Options.parse(args, System.getenv());
        } catch (Options.UsageException e) {
            System.err.println("payments-service: " + e.getMessage());
            System.exit(2);
            return;
        }
        System.exit(run(options));
    }

    static int run(Options options) {
        StopSignal stop = new StopSignal();
        CountDownLatch finished = new CountDownLatch(1);
        AtomicInteger exitCode = new AtomicInteger(1);
        Thread main = Thread.currentThread();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stop.set("signal");
            try {
                if (!finished.await(SHUTDOWN_WAIT_SECONDS, TimeUnit.SECONDS)) {
                    LOG.error("did not finish within {}s of the stop signal; exiting anyway", SHUTDOWN_WAIT_SECONDS);
                    main.interrupt();
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            System.out.flush();
            // A JVM stopped by a signal exits 128+signal; a clean stop is exit 0 (or 1 after failed deliveries).
            Runtime.getRuntime().halt(exitCode.get());
        }, "payments-service-shutdown"));
        try {
            exitCode.set(serve(options, stop));
        } catch (RuntimeException e) {
            LOG.error("payments service failed", e);
            exitCode.set(1);
        } finally {
            finished.countDown();
        }
        return exitCode.get();
    }

    private static int serve(Options options, StopSignal stop) {
        ObjectMapper mapper = JsonMapper.builder()
                .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
                .enable(StreamWriteFeature.WRITE_BIGDECIMAL_AS_PLAIN)
                .build();
        TopicSchema schema;
        RecordCodec orders;
        try {
            JsonNode catalog = TopicSchema.readCatalog(options.catalog(), mapper);
            String origin = options.catalog().toString();
            schema = TopicSchema.of(catalog, mapper, "payments", origin);
            orders = new RecordCodec(TopicSchema.of(catalog, mapper, "orders", origin));
        } catch (TopicSchema.CatalogException e) {
            LOG.error(e.getMessage());
            return 2;
        }
        LOG.info("orders and payments schemas loaded from {}; broker {}", options.catalog(), options.bootstrap());
        if (options.check()) {
            return SelfCheck.run(options, schema, orders, mapper);
        }
        Counters counters = new Counters();
        String mode = options.synthetic() ? "synthetic" : "orders";
        long started = System.nanoTime();
        String stoppedBy;
        long sendEnded = 0;
        try {
            if (!BrokerWait.await(options, options.maxBrokerWaitSeconds(), stop)) {
                stoppedBy = stop.reason();
            } else {
                try (PaymentSender sender = new PaymentSender(options, schema, mapper, counters)) {
                    stoppedBy = options.synthetic()
                            ? new SyntheticLoad(options, sender, counters, stop).run()
                            : new OrderPipeline(options, sender, orders, counters, stop).run();
                }
                sendEnded = System.nanoTime();  // the producer is closed: everything sent is acknowledged or failed
            }
        } catch (BrokerWait.BrokerUnavailableException e) {
            LOG.error(e.getMessage());
            return 1;
        }
        double seconds = (System.nanoTime() - started) / 1e9;
        double sendSeconds = sendEnded == 0 ? 0.0 : counters.sendSeconds(sendEnded);
        System.out.println(mapper.writeValueAsString(counters.summary(PaymentSender.SOURCE, mode, stoppedBy, seconds,
                sendSeconds, PaymentSender.SETTINGS)));
        System.out.flush();
        LOG.info("stopped ({}): {}", stoppedBy, counters.line());
        return counters.failed.get() == 0 ? 0 : 1;
    }
}
