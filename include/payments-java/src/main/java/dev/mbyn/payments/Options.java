package dev.mbyn.payments;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * Command-line options and environment, checked once at start.
 *
 * <p>Environment: {@code MBYN_BOOTSTRAP_SERVERS} (default {@code 127.0.0.1:9092}), {@code MBYN_TOPIC_PREFIX}
 * (default empty), {@code MBYN_CATALOG} (path of {@code include/topics.yaml}, default {@code ../topics.yaml}
 * relative to the working directory). A wrong value raises {@link UsageException} naming the option or
 * variable and what is allowed.
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
        double maxBrokerWaitSeconds) {

    static final String USAGE = String.join("\n",
            "usage: java -jar payments-service.jar [--count N] [--rate R] [--duration S] [--idle-exit S] [--synthetic]",
            "  --count N       stop after N payments have been sent",
            "  --rate R        at most R payments per second (default: as fast as possible)",
            "  --duration S    stop after S seconds",
            "  --idle-exit S   stop after S seconds without new orders (and no late payment pending)",
            "  --synthetic     consume nothing: generate valid payment events (benchmarks)",
            "  --max-broker-wait S  give up when no broker answers within S seconds (default 300)",
            "  --check         load the catalog, validate sample payments, create the clients, exit (no broker needed)",
            "environment: MBYN_BOOTSTRAP_SERVERS, MBYN_TOPIC_PREFIX, MBYN_CATALOG");

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
        return new Options(bootstrap, prefix, catalog, count, rate, duration, idleExit, synthetic, check, maxWait);
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

    String groupId() {
        return topicPrefix + "payments-service";
    }
}
