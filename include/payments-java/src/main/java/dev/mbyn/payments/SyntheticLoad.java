package dev.mbyn.payments;

import java.math.BigDecimal;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code --synthetic}: no orders are consumed; valid payment events (about 330 bytes each) are generated
 * and sent as fast as possible or at {@code --rate}, through the same validate → serialize → send path as
 * the order mode. The benchmarks compare this with Kafka's {@code ProducerPerformance}.
 *
 * <p>Order n of a run is {@code O-SYN-<n>}, so ids repeat between runs (a benchmark, not business data).
 * Without {@code --count} or {@code --duration} it runs until stopped.
 */
final class SyntheticLoad {
    private static final Logger LOG = LoggerFactory.getLogger("payments-service");
    private static final List<String> CURRENCIES = List.of("EUR", "USD", "GBP", "CHF", "SEK", "PLN");

    private final Options options;
    private final PaymentSender sender;
    private final Counters counters;
    private final StopSignal stop;

    SyntheticLoad(Options options, PaymentSender sender, Counters counters, StopSignal stop) {
        this.options = options;
        this.sender = sender;
        this.counters = counters;
        this.stop = stop;
    }

    String run() {
        RateLimiter limiter = new RateLimiter(options.rate(), stop);
        long started = System.nanoTime();
        long deadline = options.durationSeconds() == null ? Long.MAX_VALUE
                : started + (long) (options.durationSeconds() * 1e9);
        long nextProgress = started + 5_000_000_000L;
        long limit = options.count() == null ? Long.MAX_VALUE : options.count();
        String stoppedBy = "count";
        LOG.info("synthetic load to {}", options.paymentsTopic());
        for (long n = 0; n < limit; n++) {
            if (stop.isSet()) {
                stoppedBy = stop.reason();
                break;
            }
            long now = System.nanoTime();
            if (now - deadline >= 0) {
                stoppedBy = "duration";
                break;
            }
            limiter.acquire();
            String orderId = "O-SYN-" + n;
            BigDecimal amount = BigDecimal.valueOf(100 + (n * 7919) % 99_900, 2);
            Order order = new Order(orderId, amount, CURRENCIES.get((int) (n % CURRENCIES.size())),
                    PaymentPlanner.uuid("synthetic-trace:" + n));
            Payment payment = PaymentPlanner.plan(order).get(0).withoutDelay();  // nothing is held here
            sender.send(payment, 1, null);
            if (now - nextProgress >= 0) {
                LOG.info("{} ({} payments/s)", counters.line(), Math.round(counters.sent.get() / ((now - started) / 1e9)));
                nextProgress = now + 5_000_000_000L;
            }
        }
        sender.flush();
        return stoppedBy;
    }
}
