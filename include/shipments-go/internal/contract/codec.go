package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Reason codes of the record codec and dead-letter contract (mbyn.contracts.codec.REASONS on the
// Python side). The first six are verdicts of Decode; the tracker adds unexpected_error itself.
const (
	ReasonNullKey              = "null_key"
	ReasonNullValue            = "null_value"
	ReasonOversize             = "oversize"
	ReasonNotJSON              = "not_json"
	ReasonUnknownSchemaVersion = "unknown_schema_version"
	ReasonSchemaViolation      = "schema_violation"
	ReasonUnexpectedError      = "unexpected_error"
)

// MaxValueBytes is the longest value any consumer accepts (mbyn.contracts.envelope.MAX_VALUE_BYTES).
const MaxValueBytes = 512 * 1024

// MaxDepth is the deepest nesting of arrays and objects a value may have; deeper is not_json.
const MaxDepth = 512

// PoisonError is the verdict on a record that can never be processed: Reason is one of the codes
// above, Where the function and line that reached the verdict (for the dead letter's traceback).
type PoisonError struct {
	Reason  string
	Message string
	Where   string
}

func (e *PoisonError) Error() string { return e.Message }

func poison(reason, format string, args ...any) *PoisonError {
	where := ""
	if pc, file, line, ok := runtime.Caller(1); ok {
		name := "?"
		if fn := runtime.FuncForPC(pc); fn != nil {
			name = fn.Name()
		}
		where = fmt.Sprintf("%s\n\t%s:%d", name, file, line)
	}
	return &PoisonError{Reason: reason, Message: fmt.Sprintf(format, args...), Where: where}
}

// Codec decodes and validates the records of one topic: exactly one verdict per record, the same as
// mbyn.contracts.codec.decode_record (tests/vectors/*.jsonl are checked by both).
type Codec struct {
	Topic         string
	keyField      string
	compacted     bool
	schemaVersion string
	validator     *Validator
	dateFields    []string
}

// datePattern marks a payload field as a date or timestamp, as mbyn.contracts.envelope._date_fields does.
const datePattern = `^\d{4}-\d{2}-\d{2}`

// Codec builds the codec of a topic from the catalog (key field, cleanup policy, value schema).
func (c *Catalog) Codec(topic string) (*Codec, error) {
	validator, err := c.Validator(topic)
	if err != nil {
		return nil, err
	}
	spec := c.topics[topic]
	codec := &Codec{Topic: topic, validator: validator, schemaVersion: strconv.Itoa(c.SchemaVersion),
		dateFields: []string{"event_time"}}
	if key, ok := spec["key"].(string); ok {
		codec.keyField = key
	}
	if config, ok := spec["config"].(map[string]any); ok {
		policy, _ := config["cleanup.policy"].(string)
		codec.compacted = strings.Contains(policy, "compact")
	}
	if payload, ok := spec["payload"].(map[string]any); ok {
		if props, ok := payload["properties"].(map[string]any); ok {
			for name, p := range props {
				if field, ok := p.(map[string]any); ok {
					if pattern, _ := field["pattern"].(string); strings.HasPrefix(pattern, datePattern) {
						codec.dateFields = append(codec.dateFields, "payload/"+name)
					}
				}
			}
		}
	}
	return codec, nil
}

// Decode returns the record's envelope, nil for a tombstone (null value on a compacted topic), or a
// *PoisonError. Checks, in order — the first that fails is the verdict: null_key, null_value, oversize,
// not_json, then schema_violation for a value that is not an object, unknown_schema_version unless
// schema_version is the JSON integer of the catalog's version (1.0 and true are not), then
// schema_violation for the JSON Schema, calendar dates, U+0000 in a string and integers outside int64.
// It never panics, whatever the bytes (a panic of a library is reported as unexpected_error).
func (c *Codec) Decode(key, value []byte) (env map[string]any, err error) {
	defer func() {
		if p := recover(); p != nil {
			env, err = nil, poison(ReasonUnexpectedError, "%s: decoding panicked: %v", c.Topic, p)
		}
	}()
	if c.keyField != "" && key == nil {
		return nil, poison(ReasonNullKey, "%s: records must have a key (%s)", c.Topic, c.keyField)
	}
	if value == nil {
		if c.compacted {
			return nil, nil
		}
		return nil, poison(ReasonNullValue, "%s: value is null on a non-compacted topic", c.Topic)
	}
	if len(value) > MaxValueBytes {
		return nil, poison(ReasonOversize, "value is %d bytes; the limit is %d", len(value), MaxValueBytes)
	}
	if err := CheckJSON(value); err != nil {
		return nil, poison(ReasonNotJSON, "%s: %v", c.Topic, err)
	}
	doc, err := decodeJSON(value)
	if err != nil {
		return nil, poison(ReasonNotJSON, "%s: value is not JSON: %v", c.Topic, err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, poison(ReasonSchemaViolation, "%s: value is a JSON %s, not an envelope object", c.Topic, jsonKind(doc))
	}
	if v, ok := obj["schema_version"].(json.Number); !ok || string(v) != c.schemaVersion {
		return nil, poison(ReasonUnknownSchemaVersion, "%s: schema_version %s is not supported (expected %s)",
			c.Topic, preview(obj["schema_version"]), c.schemaVersion)
	}
	if err := c.validator.ValidateValue(doc); err != nil {
		return nil, poison(ReasonSchemaViolation, "%v", err)
	}
	for _, field := range c.dateFields {
		if err := checkCalendarField(obj, field); err != nil {
			return nil, poison(ReasonSchemaViolation, "%s: %v", c.Topic, err)
		}
	}
	if err := checkStringsAndIntegers(doc); err != nil {
		return nil, poison(ReasonSchemaViolation, "%s: %v", c.Topic, err)
	}
	return obj, nil
}

// CheckJSON refuses what RFC 8259 does not allow or the contract excludes, beyond what encoding/json
// checks itself: invalid UTF-8, a byte-order mark, lone UTF-16 surrogate escapes (encoding/json would
// turn them into U+FFFD), numbers beyond the float64 range (1e400) and nesting deeper than MaxDepth.
func CheckJSON(value []byte) error {
	if bytes.HasPrefix(value, []byte("\xef\xbb\xbf")) {
		return errors.New("value starts with a UTF-8 byte-order mark")
	}
	if !utf8.Valid(value) {
		return errors.New("value is not UTF-8")
	}
	if !json.Valid(value) {
		var v any
		err := json.Unmarshal(value, &v) // for the message only
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return fmt.Errorf("value is not JSON: %v", err)
	}
	return scanValid(value)
}

// scanValid walks syntactically valid JSON once: strings (for surrogate escapes), nesting depth and
// number tokens. Bounds are checked anyway, so a bug here cannot read past the value.
func scanValid(data []byte) error {
	depth := 0
	for i := 0; i < len(data); {
		switch b := data[i]; {
		case b == '"':
			end, err := scanString(data, i+1)
			if err != nil {
				return err
			}
			i = end
		case b == '[' || b == '{':
			depth++
			if depth > MaxDepth {
				return fmt.Errorf("value nests deeper than %d levels", MaxDepth)
			}
			i++
		case b == ']' || b == '}':
			depth--
			i++
		case b == '-' || (b >= '0' && b <= '9'):
			j := i + 1
			for j < len(data) && strings.IndexByte("0123456789+-.eE", data[j]) >= 0 {
				j++
			}
			if f, _ := strconv.ParseFloat(string(data[i:j]), 64); math.IsInf(f, 0) {
				return fmt.Errorf("number %s is beyond the float64 range", shorten(string(data[i:j]), 40))
			}
			i = j
		default:
			i++
		}
	}
	return nil
}

// scanString checks the escapes of the string starting at data[i] (after the quote) and returns the
// index after its closing quote.
func scanString(data []byte, i int) (int, error) {
	for i < len(data) {
		switch data[i] {
		case '"':
			return i + 1, nil
		case '\\':
			if i+1 < len(data) && data[i+1] == 'u' {
				r, ok := hex4(data, i+2)
				if !ok {
					return 0, errors.New("bad \\u escape")
				}
				i += 6
				switch {
				case r >= 0xD800 && r < 0xDC00:
					if low, ok := hex4(data, i+2); ok && data[i] == '\\' && data[i+1] == 'u' && low >= 0xDC00 && low <= 0xDFFF {
						i += 6
						continue
					}
					return 0, fmt.Errorf("lone UTF-16 surrogate escape \\u%04x", r)
				case r >= 0xDC00 && r <= 0xDFFF:
					return 0, fmt.Errorf("lone UTF-16 surrogate escape \\u%04x", r)
				}
				continue
			}
			i += 2
		default:
			i++
		}
	}
	return 0, errors.New("unterminated string")
}

// hex4 reads the four hex digits at data[i:i+4].
func hex4(data []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(data[i:i+4]), 16, 32)
	return rune(n), err == nil
}

// decodeJSON parses checked JSON. Integer literals stay json.Number (exact); numbers with a fraction or
// exponent become float64, so that bounds compare the double the Python and Java decoders also see
// (1000000.0000000001 is 1000000). Duplicate keys: the last one wins.
func decodeJSON(value []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the value")
	}
	return toFloats(doc), nil
}

func toFloats(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, item := range t {
			t[k] = toFloats(item)
		}
	case []any:
		for i, item := range t {
			t[i] = toFloats(item)
		}
	case json.Number:
		if strings.ContainsAny(string(t), ".eE") {
			if f, err := strconv.ParseFloat(string(t), 64); err == nil || !math.IsInf(f, 0) {
				return f
			}
		}
	}
	return v
}

// checkStringsAndIntegers refuses U+0000 in any string (keys too: PostgreSQL text cannot hold it) and
// integer literals outside the signed 64-bit range.
func checkStringsAndIntegers(v any) error {
	stack := []any{v}
	for len(stack) > 0 {
		item := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch t := item.(type) {
		case string:
			if strings.IndexByte(t, 0) >= 0 {
				return errors.New("a string contains U+0000 (NUL), which the warehouse cannot store")
			}
		case json.Number:
			if _, err := strconv.ParseInt(string(t), 10, 64); err != nil {
				return fmt.Errorf("integer %s is outside the signed 64-bit range", shorten(string(t), 40))
			}
		case map[string]any:
			for k, child := range t {
				stack = append(stack, k, child)
			}
		case []any:
			stack = append(stack, t...)
		}
	}
	return nil
}

// timestampShape is the catalog's date and timestamp patterns, with the parts captured.
var timestampShape = regexp.MustCompile(`^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:Z|([+-])(\d{2}):(\d{2})))?$`)

// checkCalendarField checks a field ("event_time", "payload/updated_at") that the schema's pattern
// already accepted: it must be a real date and time (2026-02-30, 25:00, 23:59:60 and offsets of 24 hours
// or 60 minutes are not) whose UTC instant lies in years 1..9999. Missing or non-string: nothing to check.
func checkCalendarField(obj map[string]any, field string) error {
	var v any = obj
	for _, part := range strings.Split(field, "/") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[part]
	}
	text, ok := v.(string)
	if !ok {
		return nil
	}
	if err := checkCalendar(text); err != nil {
		return fmt.Errorf("%s: %q is not a real date/time (%v)", field, shorten(text, 60), err)
	}
	return nil
}

func checkCalendar(text string) error {
	m := timestampShape.FindStringSubmatch(text)
	if m == nil {
		return errors.New("not a date or timestamp")
	}
	n := func(s string) int { v, _ := strconv.Atoi(s); return v }
	year, month, day := n(m[1]), n(m[2]), n(m[3])
	switch {
	case year < 1:
		return errors.New("year 0 does not exist")
	case month < 1 || month > 12:
		return fmt.Errorf("month %d", month)
	case day < 1 || day > daysIn(year, month):
		return fmt.Errorf("day %d of %04d-%02d", day, year, month)
	}
	if m[4] == "" {
		return nil
	}
	hour, minute, second := n(m[4]), n(m[5]), n(m[6])
	if hour > 23 || minute > 59 || second > 59 {
		return fmt.Errorf("time %s:%s:%s", m[4], m[5], m[6])
	}
	offset := 0
	if m[7] != "" {
		oh, om := n(m[8]), n(m[9])
		if oh > 23 || om > 59 {
			return fmt.Errorf("UTC offset %s%s:%s", m[7], m[8], m[9])
		}
		offset = oh*60 + om
		if m[7] == "-" {
			offset = -offset
		}
	}
	// The UTC instant must exist too: 0001-01-01T00:30:00+01:00 is in year 0.
	minutes := ((daysBefore(year, month)+day-1)*24+hour)*60 + minute - offset
	if minutes < 0 || minutes >= daysBefore(10000, 1)*24*60 {
		return errors.New("its UTC instant is outside years 1..9999")
	}
	return nil
}

func leap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

func daysIn(year, month int) int {
	switch month {
	case 2:
		if leap(year) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysBefore is the number of days from 0001-01-01 to year-month-01.
func daysBefore(year, month int) int {
	y := year - 1
	days := y*365 + y/4 - y/100 + y/400
	for m := 1; m < month; m++ {
		days += daysIn(year, m)
	}
	return days
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number, float64:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func preview(v any) string {
	if v == nil {
		return "missing or null"
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return shorten(string(data), 40)
}

// shorten cuts text to at most limit characters, the last one an ellipsis when cut (and valid UTF-8).
func shorten(text string, limit int) string {
	text = strings.ToValidUTF8(text, "\uFFFD")
	if utf8.RuneCountInString(text) <= limit {
		return text
	}
	runes := []rune(text)
	return string(runes[:limit-1]) + "…"
}

// Shorten is shorten for the dead-letter headers (dlq.error_message, dlq.traceback).
func Shorten(text string, limit int) string { return shorten(text, limit) }
