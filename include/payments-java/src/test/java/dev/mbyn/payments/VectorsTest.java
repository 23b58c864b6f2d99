package dev.mbyn.payments;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/**
 * The shared codec vectors ({@code tests/vectors/orders.jsonl} at the repository root): for every vector of
 * a topic this service reads, {@link RecordCodec} gives the verdict the file names — the same file the
 * Python codec is checked against. Run with {@code mvn test -DskipTests=false}.
 *
 * <p>The files are found by walking up from the working directory to the folder holding
 * {@code tests/vectors/} and {@code include/topics.yaml}; the system property {@code mbyn.root} names it
 * explicitly.
 */
class VectorsTest {
    private static final String VECTORS = "tests/vectors/orders.jsonl";
    private static final String CATALOG = "include/topics.yaml";

    static Path repositoryRoot() {
        String explicit = System.getProperty("mbyn.root");
        if (explicit != null && !explicit.isBlank()) {
            return Path.of(explicit).toAbsolutePath();
        }
        for (Path dir = Path.of("").toAbsolutePath(); dir != null; dir = dir.getParent()) {
            if (Files.isRegularFile(dir.resolve(VECTORS)) && Files.isRegularFile(dir.resolve(CATALOG))) {
                return dir;
            }
        }
        throw new IllegalStateException("no " + VECTORS + " with " + CATALOG + " above " + Path.of("").toAbsolutePath()
                + "; set -Dmbyn.root=<repository root>");
    }

    @TestFactory
    Stream<DynamicTest> everyOrdersVectorGetsItsVerdict() throws IOException, TopicSchema.CatalogException {
        Path root = repositoryRoot();
        List<RecordCodec> codecs = VectorCheck.codecs(root.resolve(CATALOG));
        List<VectorCheck.Vector> vectors = VectorCheck.read(root.resolve(VECTORS), VectorCheck.TOPICS);
        assertFalse(vectors.size() < 30, "expected at least 30 orders vectors, found " + vectors.size());
        return vectors.stream().map(vector -> DynamicTest.dynamicTest(vector.line() + ": " + vector.name(), () -> {
            RecordCodec codec = codecs.stream().filter(c -> c.topic().equals(vector.topic())).findFirst().orElseThrow();
            assertEquals(vector.verdict(), VectorCheck.verdict(codec, vector.key(), vector.value(), false),
                    () -> "codec says: " + VectorCheck.verdict(codec, vector.key(), vector.value(), true));
        }));
    }

    @TestFactory
    Stream<DynamicTest> eachReasonCodeIsCovered() throws IOException {
        List<VectorCheck.Vector> vectors = VectorCheck.read(repositoryRoot().resolve(VECTORS), VectorCheck.TOPICS);
        // oversize: generated in oversizeLimitIsExact (half a megabyte is too big for a vector file)
        return Stream.of("ok", PoisonRecordException.NULL_KEY, PoisonRecordException.NULL_VALUE,
                PoisonRecordException.NOT_JSON,
                PoisonRecordException.UNKNOWN_SCHEMA_VERSION, PoisonRecordException.SCHEMA_VIOLATION)
                .map(reason -> DynamicTest.dynamicTest(reason, () -> assertFalse(
                        vectors.stream().noneMatch(v -> v.verdict().equals(reason)), "no vector with verdict " + reason)));
    }

    @Test
    void oversizeLimitIsExact() throws IOException, TopicSchema.CatalogException {
        RecordCodec codec = VectorCheck.codecs(repositoryRoot().resolve(CATALOG)).stream()
                .filter(c -> c.topic().equals("orders")).findFirst().orElseThrow();
        byte[] key = "O-1".getBytes(java.nio.charset.StandardCharsets.UTF_8);
        assertEquals(PoisonRecordException.SCHEMA_VIOLATION,
                VectorCheck.verdict(codec, key, array(524288), false), "exactly the limit is read");
        assertEquals(PoisonRecordException.OVERSIZE, VectorCheck.verdict(codec, key, array(524289), false));
    }

    /** A JSON array of {@code size} bytes: brackets around spaces. */
    private static byte[] array(int size) {
        byte[] value = new byte[size];
        java.util.Arrays.fill(value, (byte) ' ');
        value[0] = '[';
        value[size - 1] = ']';
        return value;
    }
}
