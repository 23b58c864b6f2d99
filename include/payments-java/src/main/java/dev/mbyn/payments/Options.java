package dev.mbyn.payments;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Properties;

/**
 * Command-line options and environment, checked once at start.
 *
 * <p>Environment: {@code MBYN_BOOTSTRAP_SERVERS} (default {@code 127.0.0.1:9092}), {@code MBYN_TOPIC_PREFIX}
 * (default empty), {@code MBYN_CATALOG} (path of {@code include/topics.yaml}, default {@code ../topics.yaml}
 * relative to the working directory), {@code MBYN_SECURITY} ({@code open} or {@code scram}; with {@code scram}
 * also {@code MBYN_KAFKA_USERNAME} and {@code MBYN_KAFKA_PASSWORD}: the SCRAM-SHA-512 user of this service).
 * A wrong value raises {@link UsageException} naming the option or variable and what is allowed.
 */
record Options(
        String bootstrap,
        String topicPrefix,
        Path catalog,
        Long count,
        Double rate,
        Double durationSeconds,
        Double idleExitSeconds,
        boolean synthetic,
        boolean check,
        double maxBrokerWaitSeconds,
        String saslUsername,
        String saslPassword) {

    static final String USAGE = String.join("\n",
            "usage: java -jar payments-service.jar [--count N] [--rate R] [--duration S] [--idle-exit S] [--synthetic]",
            "  --count N       stop after N payments have been sent",
            "  --rate R        at most R payments per second (default: as fast as possible)",
            "  --duration S    stop after S seconds",
            "  --idle-exit S   stop after S seconds without new orders (and no late payment pending)",
            "  --synthetic     consume nothing: generate valid payment events (benchmarks)",
            "  --max-broker-wait S  give up when no broker answers within S seconds (default 300)",
            "  --check         load the catalog, validate sample payments, create the clients, exit (no broker needed)",
            "environment: MBYN_BOOTSTRAP_SERVERS, MBYN_TOPIC_PREFIX, MBYN_CATALOG,",
            "             MBYN_SECURITY (open|scram), MBYN_KAFKA_USERNAME, MBYN_KAFKA_PASSWORD");

    /** A setting that is missing or not allowed; the message says which and what is allowed. */
    static final class UsageException extends Exception {
        private static final long serialVersionUID = 1L;

        UsageException(String message) {
            super(message);
        }
    }

    static Options parse(String[] args, Map<String, String> env) throws UsageException {
        Long count = null;
        Double rate = null;
        Double duration = null;
        Double idleExit = null;
        boolean synthetic = false;
        boolean check = false;
        double maxWait = 300.0;
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            switch (arg) {
                case "--count" -> count = positiveLong(arg, value(args, ++i, arg));
                case "--rate" -> rate = positive(arg, value(args, ++i, arg));
                case "--duration" -> duration = positive(arg, value(args, ++i, arg));
                case "--idle-exit" -> idleExit = positive(arg, value(args, ++i, arg));
                case "--max-broker-wait" -> maxWait = positive(arg, value(args, ++i, arg));
                case "--synthetic" -> synthetic = true;
                case "--check" -> check = true;
                case "-h", "--help" -> throw new UsageException(USAGE);
                default -> throw new UsageException("unknown option " + arg + "\n" + USAGE);
            }
        }
        String bootstrap = env.getOrDefault("MBYN_BOOTSTRAP_SERVERS", "").trim();
        if (bootstrap.isEmpty()) {
            bootstrap = "127.0.0.1:9092";
        }
        for (String part : bootstrap.split(",")) {
            String hostPort = part.trim();
            int colon = hostPort.lastIndexOf(':');
            if (colon <= 0 || !hostPort.substring(colon + 1).matches("\\d+")) {
                throw new UsageException("MBYN_BOOTSTRAP_SERVERS must be host:port[,host:port...], got " + bootstrap);
            }
        }
        String prefix = env.getOrDefault("MBYN_TOPIC_PREFIX", "");
        if (!prefix.matches("[A-Za-z0-9._-]*")) {
            throw new UsageException("MBYN_TOPIC_PREFIX may only contain letters, digits, '.', '_' and '-', got " + prefix);
        }
        Path catalog = Path.of(env.getOrDefault("MBYN_CATALOG", "../topics.yaml")).toAbsolutePath().normalize();
        if (!Files.isReadable(catalog)) {
            throw new UsageException("MBYN_CATALOG must name the readable topic catalog (include/topics.yaml); "
                    + catalog + " is not readable");
        }
        String security = env.getOrDefault("MBYN_SECURITY", "open").trim();
        String username = null;
        String password = null;
        if (security.equals("scram")) {
            username = env.getOrDefault("MBYN_KAFKA_USERNAME", "").trim();
            password = env.getOrDefault("MBYN_KAFKA_PASSWORD", "");
            if (username.isEmpty() || password.isEmpty()) {
                throw new UsageException("MBYN_SECURITY=scram needs MBYN_KAFKA_USERNAME and MBYN_KAFKA_PASSWORD "
                        + "(the SCRAM user of this service and its password)");
            }
        } else if (!security.isEmpty() && !security.equals("open")) {
            throw new UsageException("MBYN_SECURITY must be open or scram, got " + security);
        }
        return new Options(bootstrap, prefix, catalog, count, rate, duration, idleExit, synthetic, check, maxWait,
                username, password);
    }

    /**
     * The start of every Kafka client configuration (producer, consumer, admin): the bootstrap servers and,
     * in the secured mode, SASL/SCRAM-SHA-512 with this service's user — the same settings as the Python
     * clients' {@code mbyn.kafka.security.client_config}.
     */
    Properties clientConfig() {
        Properties config = new Properties();
        config.put("bootstrap.servers", bootstrap);
        if (saslUsername != null) {
            config.put("security.protocol", "SASL_PLAINTEXT");
            config.put("sasl.mechanism", "SCRAM-SHA-512");
            config.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    + "username=\"" + jaasEscape(saslUsername) + "\" password=\"" + jaasEscape(saslPassword) + "\";");
        }
        return config;
    }

    private static String jaasEscape(String value) {
        return value.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    /** Never print the password (records print every component by default). */
    @Override
    public String toString() {
        return "Options[bootstrap=" + bootstrap + ", topicPrefix=" + topicPrefix + ", user=" + saslUsername + "]";
    }

    private static String value(String[] args, int index, String option) throws UsageException {
        if (index >= args.length) {
            throw new UsageException(option + " needs a value\n" + USAGE);
        }
        return args[index];
    }

    private static double positive(String option, String text) throws UsageException {
        try {
            double value = Double.parseDouble(text);
            if (value > 0 && Double.isFinite(value)) {
                return value;
            }
        } catch (NumberFormatException ignored) {
            // reported below with the allowed range
        }
        throw new UsageException(option + " must be a positive number, got " + text);
    }

    private static long positiveLong(String option, String text) throws UsageException {
        try {
            long value = Long.parseLong(text);
            if (value > 0) {
                return value;
            }
        } catch (NumberFormatException ignored) {
            // reported below with the allowed range
        }
        throw new UsageException(option + " must be a positive integer, got " + text);
    }

    String ordersTopic() {
        return topicPrefix + "orders";
    }

    String paymentsTopic() {
        return topicPrefix + "payments";
    }

    String deadLettersTopic() {
        return topicPrefix + "dead-letters";
    }

    String groupId() {
        return topicPrefix + "payments-service";
    }
}
