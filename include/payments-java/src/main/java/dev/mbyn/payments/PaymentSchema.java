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
import java.util.List;
import java.util.stream.Collectors;
import org.snakeyaml.engine.v2.api.Load;
import org.snakeyaml.engine.v2.api.LoadSettings;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.node.ObjectNode;

/**
 * The JSON Schema of a {@code payments} message value, built from the topic catalog exactly as
 * {@code include/mbyn/catalog.py} {@code Topic.value_schema} builds it: the shared envelope schema, with
 * {@code payload} replaced by the topic's payload schema and {@code event_type} restricted to the topic's
 * event types. Draft 2020-12; {@code format} is an annotation only, as in the Python validator.
 */
final class PaymentSchema {
    static final String TOPIC = "payments";

    private final Schema schema;
    private final int schemaVersion;

    private PaymentSchema(Schema schema, int schemaVersion) {
        this.schema = schema;
        this.schemaVersion = schemaVersion;
    }

    /** A catalog that cannot be read or lacks the payments topic; the message names the file. */
    static final class CatalogException extends Exception {
        private static final long serialVersionUID = 1L;

        CatalogException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    static PaymentSchema load(Path catalogFile, ObjectMapper mapper) throws CatalogException {
        Object document;
        try (Reader reader = Files.newBufferedReader(catalogFile, StandardCharsets.UTF_8)) {
            document = new Load(LoadSettings.builder().setLabel(catalogFile.toString()).build()).loadFromReader(reader);
        } catch (IOException | RuntimeException e) {
            throw new CatalogException("cannot read topic catalog " + catalogFile + ": " + e.getMessage(), e);
        }
        try {
            JsonNode root = mapper.valueToTree(document);
            JsonNode topic = root.path("topics").path(TOPIC);
            JsonNode envelope = root.path("envelope").path("schema");
            if (!envelope.isObject() || !topic.path("payload").isObject() || !topic.path("event_types").isArray()) {
                throw new IllegalArgumentException("needs envelope.schema and topics.payments.{payload,event_types}");
            }
            ObjectNode valueSchema = (ObjectNode) envelope.deepCopy();
            ObjectNode properties = (ObjectNode) valueSchema.get("properties");
            properties.set("payload", topic.get("payload").deepCopy());
            ObjectNode eventType = mapper.createObjectNode();
            eventType.put("type", "string");
            eventType.set("enum", topic.get("event_types").deepCopy());
            properties.set("event_type", eventType);
            JsonNode version = root.path("envelope").path("schema_version");
            if (!version.isInt()) {
                throw new IllegalArgumentException("envelope.schema_version must be an integer");
            }
            Schema compiled = SchemaRegistry.withDefaultDialect(SpecificationVersion.DRAFT_2020_12).getSchema(valueSchema);
            return new PaymentSchema(compiled, version.intValue());
        } catch (RuntimeException e) {
            throw new CatalogException("topic catalog " + catalogFile + " has no usable payments schema: " + e.getMessage(), e);
        }
    }

    /** Every violation of the schema, as {@code path: message} lines; empty when the value is valid. */
    List<String> violations(JsonNode value) {
        List<Error> errors = schema.validate(value);
        if (errors.isEmpty()) {
            return List.of();
        }
        return errors.stream().map(Error::toString).collect(Collectors.toList());
    }

    /** The envelope's {@code schema_version} every message carries. */
    int schemaVersion() {
        return schemaVersion;
    }
}
