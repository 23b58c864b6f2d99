package dev.mbyn.payments;

import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Blocks until a broker answers, with exponential back-off (0.5 s doubling to 15 s) and one log line per
 * attempt — the client's own reconnect warnings are silenced in {@code simplelogger.properties}.
 */
final class BrokerWait {
    private static final Logger LOG = LoggerFactory.getLogger("payments-service");

    /** No broker answered within the allowed wait. */
    static final class BrokerUnavailableException extends Exception {
        private static final long serialVersionUID = 1L;

        BrokerUnavailableException(String message) {
            super(message);
        }
    }

    private BrokerWait() {
    }

    /** Returns true once the cluster answers, false if stopped while waiting. */
    static boolean await(Options options, double maxWaitSeconds, StopSignal stop) throws BrokerUnavailableException {
        String bootstrap = options.bootstrap();
        Properties config = options.clientConfig();
        config.put(AdminClientConfig.CLIENT_ID_CONFIG, PaymentSender.SOURCE + "-probe");
        config.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        config.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        long deadline = System.nanoTime() + (long) (maxWaitSeconds * 1e9);
        double delay = 0.5;
        try (Admin admin = Admin.create(config)) {
            for (int attempt = 1; ; attempt++) {
                try {
                    admin.describeCluster(new DescribeClusterOptions().timeoutMs(3000)).nodes().get(4, TimeUnit.SECONDS);
                    if (attempt > 1) {
                        LOG.info("broker {} is reachable now", bootstrap);
                    }
                    return true;
                } catch (ExecutionException | TimeoutException e) {
                    if (e.getCause() instanceof SaslAuthenticationException refused) {
                        // Retrying cannot fix credentials: stop at once and say which settings to check.
                        throw new BrokerUnavailableException("the broker at " + bootstrap + " refused the credentials of "
                                + "MBYN_KAFKA_USERNAME=" + options.saslUsername() + " (wrong MBYN_KAFKA_PASSWORD, unknown "
                                + "user, or MBYN_SECURITY does not match the cluster): " + refused.getMessage());
                    }
                    if (stop.isSet()) {
                        return false;
                    }
                    boolean giveUp = System.nanoTime() + (long) (delay * 1e9) - deadline > 0;
                    LOG.warn("broker {} unreachable (attempt {}){}", bootstrap, attempt,
                            giveUp ? "" : ", retrying in " + delay + "s");
                    if (giveUp) {
                        throw new BrokerUnavailableException("no Kafka broker at " + bootstrap + " after "
                                + Math.round(maxWaitSeconds) + "s (start one with `mbyn kafka up` or set "
                                + "MBYN_BOOTSTRAP_SERVERS)");
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return false;
                }
                if (stop.sleep((long) (delay * 1000))) {
                    return false;
                }
                delay = Math.min(15.0, delay * 2);
            }
        }
    }
}
