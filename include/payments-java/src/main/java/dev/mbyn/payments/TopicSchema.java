package dev.mbyn.payments;

import com.networknt.schema.Error;
import com.networknt.schema.Schema;
import com.networknt.schema.SchemaRegistry;
import com.networknt.schema.SpecificationVersion;
import java.io.IOException;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.snakeyaml.engine.v2.api.Load;
import org.snakeyaml.engine.v2.api.LoadSettings;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.node.ObjectNode;

/**
 * The JSON Schema of one catalog topic's message value, built from the topic catalog exactly as
 * {@code include/mbyn/catalog.py} {@code Topic.value_schema} builds it: the shared envelope schema, with
 * {@code payload} replaced by the topic's payload schema and {@code event_type} restricted to the topic's
 * event types. Draft 2020-12; {@code format} is an annotation only, as in the Python validator.
 *
 * <p>{@code pattern} is an ECMA-262 regular expression, where {@code $} matches only at the very end of the
 * text; in {@code java.util.regex} it also matches before a final line terminator, so every {@code $}
 * outside a character class is compiled as {@code \z} ({@link #javaPattern}).
 */
final class TopicSchema {
    /** A payload field whose pattern starts like this holds a date or timestamp (as in {@code contracts/envelope.py}). */
    private static final String DATE_PATTERN_START = "^\\d{4}-\\d{2}-\\d{2}";

    private final String topic;
    private final Schema schema;
    private final int schemaVersion;
    private final boolean keyed;
    private final boolean compacted;
    private final List<String> dateFields;

    private TopicSchema(String topic, Schema schema, int schemaVersion, boolean keyed, boolean compacted,
            List<String> dateFields) {
        this.topic = topic;
        this.schema = schema;
        this.schemaVersion = schemaVersion;
        this.keyed = keyed;
        this.compacted = compacted;
        this.dateFields = List.copyOf(dateFields);
    }

    /** A catalog that cannot be read or lacks a topic; the message names the file. */
    static final class CatalogException extends Exception {
        private static final long serialVersionUID = 1L;

        CatalogException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** The whole catalog document ({@code include/topics.yaml}, anchors and aliases resolved) as a tree. */
    static JsonNode readCatalog(Path catalogFile, ObjectMapper mapper) throws CatalogException {
        try (Reader reader = Files.newBufferedReader(catalogFile, StandardCharsets.UTF_8)) {
            Object document = new Load(LoadSettings.builder().setLabel(catalogFile.toString()).build())
                    .loadFromReader(reader);
            return mapper.valueToTree(document);
        } catch (IOException | RuntimeException e) {
            throw new CatalogException("cannot read topic catalog " + catalogFile + ": " + e.getMessage(), e);
        }
    }

    /** Read the catalog file and build the schema of {@code topic} (a logical name such as {@code payments}). */
    static TopicSchema load(Path catalogFile, ObjectMapper mapper, String topic) throws CatalogException {
        return of(readCatalog(catalogFile, mapper), mapper, topic, catalogFile.toString());
    }

    /** The schema of {@code topic} from an already read catalog; {@code origin} names it in error messages. */
    static TopicSchema of(JsonNode root, ObjectMapper mapper, String topic, String origin) throws CatalogException {
        try {
            JsonNode spec = root.path("topics").path(topic);
            JsonNode envelope = root.path("envelope").path("schema");
            if (!envelope.isObject() || !spec.path("payload").isObject() || !spec.path("event_types").isArray()) {
                throw new IllegalArgumentException("needs envelope.schema and topics." + topic + ".{payload,event_types}");
            }
            List<String> dateFields = new ArrayList<>();
            for (Map.Entry<String, JsonNode> field : spec.path("payload").path("properties").properties()) {
                if (field.getValue().path("pattern").asString("").startsWith(DATE_PATTERN_START)) {
                    dateFields.add(field.getKey());
                }
            }
            ObjectNode valueSchema = (ObjectNode) envelope.deepCopy();
            ObjectNode properties = (ObjectNode) valueSchema.get("properties");
            properties.set("payload", spec.get("payload").deepCopy());
            ObjectNode eventType = mapper.createObjectNode();
            eventType.put("type", "string");
            eventType.set("enum", spec.get("event_types").deepCopy());
            properties.set("event_type", eventType);
            rewritePatterns(valueSchema);
            JsonNode version = root.path("envelope").path("schema_version");
            if (!version.isInt()) {
                throw new IllegalArgumentException("envelope.schema_version must be an integer");
            }
            Schema compiled = SchemaRegistry.withDefaultDialect(SpecificationVersion.DRAFT_2020_12).getSchema(valueSchema);
            boolean keyed = spec.path("key").isString() && !spec.path("key").stringValue().isEmpty();
            boolean compacted = spec.path("config").path("cleanup.policy").asString("").contains("compact");
            return new TopicSchema(topic, compiled, version.intValue(), keyed, compacted, dateFields);
        } catch (RuntimeException e) {
            throw new CatalogException("topic catalog " + origin + " has no usable " + topic + " schema: "
                    + e.getMessage(), e);
        }
    }

    /** Compile every {@code pattern} keyword of the schema tree with ECMA-262 {@code $} semantics. */
    private static void rewritePatterns(JsonNode node) {
        if (node.isObject()) {
            ObjectNode object = (ObjectNode) node;
            for (Map.Entry<String, JsonNode> entry : object.properties()) {
                if (entry.getKey().equals("pattern") && entry.getValue().isString()) {
                    object.put("pattern", javaPattern(entry.getValue().stringValue()));
                } else {
                    rewritePatterns(entry.getValue());
                }
            }
        } else if (node.isArray()) {
            node.values().forEach(TopicSchema::rewritePatterns);
        }
    }

    /** An ECMA-262 pattern as a {@code java.util.regex} pattern: {@code $} (unescaped, outside {@code [...]}) → {@code \z}. */
    static String javaPattern(String ecma) {
        StringBuilder out = new StringBuilder(ecma.length() + 4);
        boolean inClass = false;
        for (int i = 0; i < ecma.length(); i++) {
            char c = ecma.charAt(i);
            if (c == '\\' && i + 1 < ecma.length()) {
                out.append(c).append(ecma.charAt(++i));
            } else if (inClass) {
                inClass = c != ']';
                out.append(c);
            } else if (c == '[') {
                inClass = true;
                out.append(c);
            } else if (c == '$') {
                out.append("\\z");
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    /** Every violation of the schema, as {@code path: message} lines; empty when the value is valid. */
    List<String> violations(JsonNode value) {
        List<Error> errors = schema.validate(value);
        if (errors.isEmpty()) {
            return List.of();
        }
        return errors.stream().map(Error::toString).collect(Collectors.toList());
    }

    /** The logical topic name. */
    String topic() {
        return topic;
    }

    /** The envelope's {@code schema_version} every message carries. */
    int schemaVersion() {
        return schemaVersion;
    }

    /** True when the catalog names a key field for the topic: a record without a key is then unusable. */
    boolean keyed() {
        return keyed;
    }

    /** Payload fields holding a date or timestamp, which must also be real calendar dates. */
    List<String> dateFields() {
        return dateFields;
    }

    /** True for a compacted topic, where a null value is a tombstone rather than a poison record. */
    boolean compacted() {
        return compacted;
    }
}
