// Package contract loads mbyn's topic catalog (include/topics.yaml) and validates envelopes against
// it exactly as the Python side does (mbyn.catalog.Topic.value_schema): the envelope schema with the
// topic's payload schema under "payload" and its event types as an enum under "event_type".
package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// TimeLayout is the envelope's event_time format: ISO-8601 UTC with milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Catalog is the parsed catalog file.
type Catalog struct {
	Path          string
	SchemaVersion int
	envelope      map[string]any
	topics        map[string]map[string]any
}

// Load reads and parses the catalog file.
func Load(path string) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read topic catalog %s (set MBYN_CATALOG to include/topics.yaml): %w", path, err)
	}
	var doc struct {
		Envelope struct {
			SchemaVersion int            `yaml:"schema_version"`
			Schema        map[string]any `yaml:"schema"`
		} `yaml:"envelope"`
		Topics map[string]map[string]any `yaml:"topics"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("topic catalog %s is not valid YAML: %w", path, err)
	}
	if doc.Envelope.Schema == nil || len(doc.Topics) == 0 || doc.Envelope.SchemaVersion < 1 {
		return nil, fmt.Errorf("topic catalog %s: needs envelope.schema, envelope.schema_version and topics", path)
	}
	return &Catalog{Path: path, SchemaVersion: doc.Envelope.SchemaVersion, envelope: doc.Envelope.Schema,
		topics: doc.Topics}, nil
}

// Validator checks message values of one topic.
type Validator struct {
	Topic  string
	schema *jsonschema.Schema
}

// ValueSchema composes the full JSON Schema of a topic's message values.
func (c *Catalog) ValueSchema(topic string) (map[string]any, error) {
	spec, ok := c.topics[topic]
	if !ok {
		return nil, fmt.Errorf("topic catalog %s has no topic %q", c.Path, topic)
	}
	payload, ok := spec["payload"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("topic catalog %s: topic %q has no payload schema", c.Path, topic)
	}
	var types []any
	if list, ok := spec["event_types"].([]any); ok {
		types = list
	}
	schema, err := deepCopy(c.envelope)
	if err != nil {
		return nil, err
	}
	props, ok := schema["properties"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("topic catalog %s: envelope.schema has no properties", c.Path)
	}
	props["payload"] = payload
	props["event_type"] = map[string]any{"type": "string", "enum": types}
	return schema, nil
}

// MaxMessageBytes is a topic's max.message.bytes from the catalog's config, and false when the catalog
// sets none or a value that is not a positive 32-bit number.
func (c *Catalog) MaxMessageBytes(topic string) (int32, bool) {
	config, _ := c.topics[topic]["config"].(map[string]any)
	n, err := strconv.ParseInt(fmt.Sprint(config["max.message.bytes"]), 10, 32)
	if err != nil || n <= 0 {
		return 0, false
	}
	return int32(n), true
}

// Validator compiles the value schema of a topic.
func (c *Catalog) Validator(topic string) (*Validator, error) {
	schema, err := c.ValueSchema(topic)
	if err != nil {
		return nil, err
	}
	// Round-trip through JSON: YAML gives Go ints, the schema library wants JSON numbers.
	doc, err := toJSONValue(schema)
	if err != nil {
		return nil, fmt.Errorf("topic %q: %w", topic, err)
	}
	compiler := jsonschema.NewCompiler()
	url := "mbyn:///" + topic + ".json"
	if err := compiler.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("topic %q: schema: %w", topic, err)
	}
	compiled, err := compiler.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("topic %q: schema does not compile: %w", topic, err)
	}
	return &Validator{Topic: topic, schema: compiled}, nil
}

// Validate checks an encoded JSON value; the error lists the violations on one line.
func (v *Validator) Validate(value []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err != nil {
		return fmt.Errorf("%s: value is not JSON: %w", v.Topic, err)
	}
	return v.ValidateValue(inst)
}

// ValidateValue checks an already decoded JSON value (json.Number, float64, string, bool, nil, []any,
// map[string]any); the error lists the violations on one line.
func (v *Validator) ValidateValue(inst any) error {
	if err := v.schema.Validate(inst); err != nil {
		return fmt.Errorf("%s: %s", v.Topic, oneLine(err.Error()))
	}
	return nil
}

func oneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.Join(lines, " ")
}

func toJSONValue(v any) (any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(data))
}

func deepCopy(m map[string]any) (map[string]any, error) {
	data, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(data, &out)
}

// FormatTime renders a time as the envelope's event_time.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// ParseTime reads an envelope's event_time (any ISO-8601 offset, fractional seconds optional).
func ParseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }
