package dev.mbyn.payments;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import tools.jackson.core.JacksonException;
import tools.jackson.databind.DeserializationFeature;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.json.JsonMapper;

/**
 * Checks the shared codec vectors ({@code tests/vectors/*.jsonl}, one JSON object a line:
 * {@code name}, {@code topic}, {@code key}, {@code value} or {@code value_b64}, {@code verdict}) against
 * {@link RecordCodec}: the Java side of "Python, Java and Go give the same verdict".
 *
 * <p>{@code java -cp payments-service.jar dev.mbyn.payments.VectorCheck <catalog> <vectors.jsonl>...}
 * checks the vectors of the topics this service reads (orders), prints one line per disagreement and a
 * summary, and exits 0 when all agree, 1 when some do not, 2 on a usage, catalog or file error.
 */
public final class VectorCheck {
    /** The topics whose records this service decodes. */
    static final List<String> TOPICS = List.of("orders");

    private VectorCheck() {
    }

    /** One vector: what the codec must say about a record. */
    record Vector(int line, String name, String topic, byte[] key, byte[] value, String verdict) {
    }

    /** The vectors of {@code topics} in a file, in file order. */
    static List<Vector> read(Path file, List<String> topics) throws IOException {
        ObjectMapper mapper = JsonMapper.builder().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS).build();
        List<Vector> out = new ArrayList<>();
        try (BufferedReader reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            int number = 0;
            for (String line = reader.readLine(); line != null; line = reader.readLine()) {
                number++;
                if (line.isBlank()) {
                    continue;
                }
                JsonNode vector;
                try {
                    vector = mapper.readTree(line);
                } catch (JacksonException e) {
                    throw new IOException(file + ":" + number + ": not a JSON object: " + e.getOriginalMessage(), e);
                }
                String topic = vector.path("topic").stringValue("");
                if (!topics.contains(topic)) {
                    continue;
                }
                JsonNode key = vector.path("key");
                byte[] value;
                if (vector.has("value_b64")) {
                    value = Base64.getDecoder().decode(vector.get("value_b64").stringValue(""));
                } else {
                    JsonNode text = vector.path("value");
                    value = text.isString() ? text.stringValue().getBytes(StandardCharsets.UTF_8) : null;
                }
                out.add(new Vector(number, vector.path("name").stringValue("line " + number), topic,
                        key.isString() ? key.stringValue().getBytes(StandardCharsets.UTF_8) : null, value,
                        vector.path("verdict").stringValue("")));
            }
        }
        return out;
    }

    /** The codec's verdict on a record: {@code ok} or the reason code, and with {@code why} its message. */
    static String verdict(RecordCodec codec, byte[] key, byte[] value, boolean why) {
        try {
            codec.decode(key, value);
            return "ok";
        } catch (PoisonRecordException e) {
            return why ? e.reason() + " (" + DeadLetters.cut(String.valueOf(e.getMessage()), 200) + ")" : e.reason();
        }
    }

    /** The codec of each topic this service reads, from the catalog file. */
    static List<RecordCodec> codecs(Path catalog) throws TopicSchema.CatalogException {
        ObjectMapper mapper = JsonMapper.builder().build();
        JsonNode root = TopicSchema.readCatalog(catalog, mapper);
        List<RecordCodec> out = new ArrayList<>();
        for (String topic : TOPICS) {
            out.add(new RecordCodec(TopicSchema.of(root, mapper, topic, catalog.toString())));
        }
        return out;
    }

    /** One line per vector the codec disagrees with; empty when all agree. */
    static List<String> disagreements(List<RecordCodec> codecs, Path file, List<Vector> vectors, boolean verbose) {
        List<String> out = new ArrayList<>();
        for (Vector vector : vectors) {
            RecordCodec codec = codecs.stream().filter(c -> c.topic().equals(vector.topic())).findFirst().orElseThrow();
            String got;
            try {
                got = verdict(codec, vector.key(), vector.value(), false);
            } catch (RuntimeException e) {
                got = "crash: " + e;
            }
            if (verbose) {
                System.out.println(file.getFileName() + ":" + vector.line() + " " + vector.name() + ": "
                        + verdict(codec, vector.key(), vector.value(), true));
            }
            if (!got.equals(vector.verdict())) {
                out.add(file.getFileName() + ":" + vector.line() + " " + vector.name() + ": expected " + vector.verdict()
                        + ", Java says " + got);
            }
        }
        return out;
    }

    public static void main(String[] args) {
        boolean verbose = args.length > 0 && args[0].equals("--verbose");
        if (verbose) {
            args = java.util.Arrays.copyOfRange(args, 1, args.length);
        }
        if (args.length < 2) {
            System.err.println("usage: java -cp payments-service.jar dev.mbyn.payments.VectorCheck [--verbose] <topics.yaml> <vectors.jsonl>...");
            System.exit(2);
        }
        int checked = 0;
        List<String> problems = new ArrayList<>();
        try {
            List<RecordCodec> codecs = codecs(Path.of(args[0]));
            for (int i = 1; i < args.length; i++) {
                Path file = Path.of(args[i]);
                List<Vector> vectors = read(file, TOPICS);
                checked += vectors.size();
                problems.addAll(disagreements(codecs, file, vectors, verbose));
            }
        } catch (IOException | TopicSchema.CatalogException e) {
            System.err.println("vector check: " + e.getMessage());
            System.exit(2);
        }
        problems.forEach(System.out::println);
        System.out.println("vector check: " + checked + " vectors of " + TOPICS + ", " + problems.size() + " disagreements");
        System.exit(problems.isEmpty() ? 0 : 1);
    }
}
