package config

import (
	"errors"
	"fmt"
	stdmaps "maps"
	"math"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/structs"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts the name of every environment variable Load reads.
const EnvPrefix = "RELAY_"

// Load reads the configuration: defaults, then the YAML file at path (none
// if path is ""), then the RELAY_* variables in environ (os.Environ()
// form). It returns an error if anything cannot be decoded or the result
// does not pass Validate; the error has one line per problem.
func Load(path string, environ []string) (*Config, error) {
	k := koanf.New(".")
	if err := k.Load(structs.Provider(Default(), "koanf"), nil); err != nil {
		return nil, fmt.Errorf("load defaults: %w", err)
	}
	if path != "" {
		// A key written with no value ("log:" with everything below it
		// commented out) decodes as null. Merged as is, it would replace
		// the whole default section; skip it so the defaults stay.
		if err := k.Load(file.Provider(path), yaml.Parser(), koanf.WithMergeFunc(mergeSkippingNulls)); err != nil {
			return nil, fmt.Errorf("read config file %s: %w", path, err)
		}
	}
	env, envWarnings, err := fromEnv(environ)
	if err != nil {
		return nil, err
	}
	if err := k.Load(confmap.Provider(env, ""), nil); err != nil {
		return nil, fmt.Errorf("load environment: %w", err)
	}

	cfg, err := decode(k)
	if err != nil {
		return nil, err
	}
	cfg.envWarnings = envWarnings
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.remember(path, environ)
	return cfg, nil
}

func mergeSkippingNulls(src, dest map[string]any) error {
	dropNulls(src)
	maps.Merge(src, dest)
	return nil
}

// dropNulls removes null values from nested maps (not from lists, where
// position matters and validation reports empty entries).
func dropNulls(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(v)
		}
	}
}

var (
	configType   = reflect.TypeFor[Config]()
	durationType = reflect.TypeFor[time.Duration]()
	webhookType  = reflect.TypeFor[Webhook]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

// decode turns the merged map into a Config, strictly: unknown keys, wrong
// types and numbers where durations belong are all errors.
func decode(k *koanf.Koanf) (*Config, error) {
	var problems []string
	unknownKeys(k.Raw(), configType, "", &problems)
	sawUnknown := len(problems) > 0

	var cfg Config
	err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{
		Tag: "koanf",
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				shapeHook,
				webhookDefaultsHook,
				durationHook,
				byteSizeHook,
				integerHook,
			),
			ErrorUnused: true,
			// mapstructure falls back to case-insensitive matching; keys
			// must be written exactly.
			MatchName: func(key, field string) bool { return key == field },
			TagName:   "koanf",
		},
	})
	if err != nil {
		collectDecodeErrors(err, sawUnknown, &problems)
	}
	if len(problems) > 0 {
		return nil, joinLines(problems)
	}
	return &cfg, nil
}

// shapeHook reports a scalar where a section or list belongs in the same
// words as other type errors.
func shapeHook(from, to reflect.Type, data any) (any, error) {
	if data == nil {
		return data, nil
	}
	switch to.Kind() {
	case reflect.Struct, reflect.Map:
		if from.Kind() != reflect.Map {
			return nil, &shapeError{want: "a mapping (key: value lines)", value: data}
		}
	case reflect.Slice:
		if from.Kind() != reflect.Slice && from.Kind() != reflect.Array {
			return nil, &shapeError{want: "a list", value: data}
		}
	}
	return data, nil
}

// shapeError is a value of the wrong shape, kept apart from its message so
// that the value of a secret key is never printed.
type shapeError struct {
	want  string
	value any
}

func (e *shapeError) Error() string { return fmt.Sprintf("want %s, got %s", e.want, describe(e.value)) }

// webhookDefaultsHook makes "active" default to true and "secret_overlap"
// to DefaultSecretOverlap for each endpoint, and reads a bare 0 as the
// overlap "0" (none), which needs no unit.
func webhookDefaultsHook(_, to reflect.Type, data any) (any, error) {
	if to != webhookType {
		return data, nil
	}
	m, ok := data.(map[string]any)
	if !ok {
		return data, nil
	}
	out := make(map[string]any, len(m)+2)
	for k, v := range m {
		out[k] = v
	}
	if v, set := m["active"]; !set || v == nil {
		out["active"] = true
	}
	switch v, set := m["secret_overlap"]; {
	case !set || v == nil:
		out["secret_overlap"] = DefaultSecretOverlap.String()
	case isZeroNumber(v):
		out["secret_overlap"] = "0"
	}
	return out, nil
}

// isZeroNumber reports whether v is a number the YAML parser read as 0.
func isZeroNumber(v any) bool {
	switch n := v.(type) {
	case int:
		return n == 0
	case int64:
		return n == 0
	case uint64:
		return n == 0
	case float64:
		return n == 0
	}
	return false
}

// durationHook decodes "500ms"-style strings into time.Duration and refuses
// bare numbers, which mapstructure would otherwise read as nanoseconds.
func durationHook(_, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch v := data.(type) {
	case time.Duration:
		return v, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration (write a number with a unit, e.g. \"500ms\", \"30s\", \"1h\")", v)
		}
		return d, nil
	case int, int64, uint64, float64:
		return nil, fmt.Errorf("%v has no unit (write e.g. \"%vs\" for seconds)", v, v)
	default:
		return nil, fmt.Errorf("want a duration such as \"30s\", got %s", describe(data))
	}
}

// byteSizeHook decodes "1GB"-style strings and whole numbers of bytes.
func byteSizeHook(_, to reflect.Type, data any) (any, error) {
	if to != byteSizeType {
		return data, nil
	}
	switch v := data.(type) {
	case ByteSize:
		return v, nil
	case string:
		n, err := ParseByteSize(v)
		if err != nil {
			return nil, err
		}
		return n, nil
	case int:
		return ByteSize(v), checkSize(int64(v))
	case int64:
		return ByteSize(v), checkSize(v)
	case uint64:
		return ByteSize(v), checkSize(int64(v))
	case float64:
		if v != math.Trunc(v) || v < 0 {
			return nil, fmt.Errorf("want a whole number of bytes or a size such as \"1GB\", got %v", v)
		}
		return ByteSize(v), nil
	default:
		return nil, fmt.Errorf("want a size such as \"1GB\", got %s", describe(data))
	}
}

func checkSize(n int64) error {
	if n < 0 {
		return fmt.Errorf("want a size of at least 0, got %d", n)
	}
	return nil
}

// ParseByteSize reads "1GB", "512MB", "64kB", "100B" or a plain number of
// bytes. Units are powers of 1024, as in postgresql.conf.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"KB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size (write e.g. \"1GB\", \"512MB\" or a number of bytes)", s)
	}
	return ByteSize(n * mult), nil
}

// integerHook refuses fractions for integer keys (mapstructure truncates).
func integerHook(_, to reflect.Type, data any) (any, error) {
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
	default:
		return data, nil
	}
	f, ok := data.(float64)
	if !ok {
		return data, nil
	}
	if f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return nil, fmt.Errorf("want a whole number, got %v", f)
	}
	return int64(f), nil
}

// collectDecodeErrors flattens mapstructure's joined errors into
// "key: problem" lines.
func collectDecodeErrors(err error, sawUnknown bool, out *[]string) {
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range multi.Unwrap() {
			collectDecodeErrors(e, sawUnknown, out)
		}
		return
	}
	de, ok := err.(*mapstructure.DecodeError)
	if !ok {
		// mapstructure wraps the joined errors in a summary error.
		if inner := errors.Unwrap(err); inner != nil {
			collectDecodeErrors(inner, sawUnknown, out)
		} else {
			*out = append(*out, err.Error())
		}
		return
	}
	key := de.Name()
	if key == "" {
		key = "(top level)"
	}
	inner := de.Unwrap()
	if strings.HasPrefix(inner.Error(), "has invalid keys") {
		// Already reported by unknownKeys, with suggestions.
		if !sawUnknown {
			*out = append(*out, key+": "+inner.Error())
		}
		return
	}
	// The value of a secret key is never printed: the message says what
	// was expected and what kind of value came instead.
	secret := SecretKey(key)
	var ute *mapstructure.UnconvertibleTypeError
	if errors.As(inner, &ute) {
		*out = append(*out, fmt.Sprintf("%s: want %s, got %s", key, kindName(ute.Expected.Type()), describeValue(ute.Value, secret)))
		return
	}
	var se *shapeError
	if errors.As(inner, &se) {
		*out = append(*out, fmt.Sprintf("%s: want %s, got %s", key, se.want, describeValue(se.value, secret)))
		return
	}
	if secret {
		*out = append(*out, key+": invalid value (not shown: the key holds a secret)")
		return
	}
	*out = append(*out, key+": "+inner.Error())
}

// describeValue describes v as describe does, or, for the value of a
// secret key, by its kind alone.
func describeValue(v any, secret bool) string {
	if !secret {
		return describe(v)
	}
	const notShown = " (not shown: the key holds a secret"
	switch v.(type) {
	case string:
		return "text" + notShown + ")"
	case bool:
		return "a boolean" + notShown + "; quote it if it is meant as text)"
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return "a number" + notShown + "; quote it if it is meant as text)"
	}
	return describe(v) // nothing, a list, a mapping: no value in the words
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case string:
		return fmt.Sprintf("string %q", v)
	case bool, int, int64, uint64, float64:
		s := fmt.Sprintf("%T %v", v, v)
		if _, isBool := v.(bool); !isBool {
			s += " (quote it if it is meant as text)"
		}
		return s
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

// unknownKeys reports keys in v that have no field in t, recursing into
// nested sections, lists and maps.
func unknownKeys(v any, t reflect.Type, path string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, key := range slices.Sorted(stdmaps.Keys(m)) {
			f, ok := fieldByKey(t, key)
			if !ok {
				*out = append(*out, joinKey(path, key)+": unknown key"+suggest(path, key, keysOf(t)))
				continue
			}
			unknownKeys(m[key], f.Type, joinKey(path, key), out)
		}
	case reflect.Slice, reflect.Array:
		l, ok := v.([]any)
		if !ok {
			return
		}
		for i, e := range l {
			unknownKeys(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), out)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, key := range slices.Sorted(stdmaps.Keys(m)) {
			unknownKeys(m[key], t.Elem(), path+"["+key+"]", out)
		}
	}
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fieldByKey finds the field of struct type t whose koanf tag is key.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && tagName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func keysOf(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() && tagName(f) != "" {
			keys = append(keys, tagName(f))
		}
	}
	return keys
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// suggest returns ` (did you mean "path.x"?)` for the candidate closest
// to key, if any is close.
func suggest(path, key string, candidates []string) string {
	// Allow one edit per three characters, at most two.
	best, bestDist := "", min(2, max(1, len(key)/3))+1
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(key), c); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", joinKey(path, best))
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// cliVariables are the RELAY_* variables of the admin commands (relay
// webhooks, relay events --url), not of the configuration: the README has
// an operator export them in the shell where relay check and relay run
// are typed too, so they are not reported as unknown.
var cliVariables = []string{"RELAY_ADMIN_URL", "RELAY_ADMIN_TOKEN"}

// fromEnv turns RELAY_* variables into a nested map of typed values.
// Variables whose first level is not a configuration section are returned
// as warnings (other software may use the prefix too: Kubernetes, for
// one, sets RELAY_SERVICE_HOST for a service named "relay"), unless they
// look like a misspelt setting.
func fromEnv(environ []string) (map[string]any, []string, error) {
	out := map[string]any{}
	var warnings, problems []string
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || slices.Contains(cliVariables, name) {
			continue
		}
		parts := strings.Split(strings.ToLower(strings.TrimPrefix(name, EnvPrefix)), "__")
		key := strings.Join(parts, ".")

		t := configType
		for i, part := range parts {
			f, found := fieldByKey(t, part)
			if !found {
				switch {
				case i > 0:
					problems = append(problems, fmt.Sprintf("%s: %s is not a configuration key%s", name, key, suggest(strings.Join(parts[:i], "."), part, keysOf(t))))
				case nearMiss(name) != "":
					problems = append(problems, fmt.Sprintf("%s: not a configuration variable (did you mean %s? levels are separated by __)", name, nearMiss(name)))
				default:
					warnings = append(warnings, fmt.Sprintf("%s: not a configuration variable; ignored", name))
				}
				t = nil
				break
			}
			t = f.Type
			if i < len(parts)-1 && t.Kind() != reflect.Struct {
				problems = append(problems, fmt.Sprintf("%s: %s is not a section", name, strings.Join(parts[:i+1], ".")))
				t = nil
				break
			}
		}
		if t == nil {
			continue
		}
		v, err := envValue(t, value)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v (%s)", name, err, key))
			continue
		}
		setNested(out, parts, v)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, nil, joinLines(problems)
	}
	sort.Strings(warnings)
	return out, warnings, nil
}

// envValue converts the text of an environment variable to the type of the
// key it sets.
func envValue(t reflect.Type, s string) (any, error) {
	if t == byteSizeType {
		return ParseByteSize(s)
	}
	if t == durationType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration (e.g. \"500ms\", \"30s\", \"1h\")", s)
		}
		return d, nil
	}
	switch t.Kind() {
	case reflect.String:
		return s, nil
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return b, nil
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", s)
		}
		return n, nil
	case reflect.Slice:
		if !envSettable(t) {
			break
		}
		list := []any{}
		if strings.TrimSpace(s) == "" {
			return list, nil
		}
		for item := range strings.SplitSeq(s, ",") {
			v, err := envValue(t.Elem(), strings.TrimSpace(item))
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		return list, nil
	}
	return nil, errors.New("cannot be set from the environment; use the config file")
}

// envSettable reports whether a key of type t can be set from one
// environment variable: scalars and comma-separated lists of scalars.
func envSettable(t reflect.Type) bool {
	if t == durationType {
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() != reflect.Slice && envSettable(t.Elem())
	}
	return false
}

func setNested(m map[string]any, parts []string, v any) {
	for _, p := range parts[:len(parts)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[p] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = v
}

// nearMiss returns the variable a misspelt name probably meant: the same
// name with single underscores where levels need "__", e.g.
// RELAY_DELIVERY_WORKERS for RELAY_DELIVERY__WORKERS.
func nearMiss(name string) string {
	flat := strings.ToUpper(strings.ReplaceAll(name, "__", "_"))
	for _, v := range EnvVars() {
		if strings.ReplaceAll(v, "__", "_") == flat {
			return v
		}
	}
	return ""
}

// EnvVars lists the environment variables Load reads, one per key that can
// be set from the environment, sorted.
func EnvVars() []string {
	var out []string
	for _, key := range envKeys(configType, nil) {
		out = append(out, EnvPrefix+strings.ToUpper(strings.Join(key, "__")))
	}
	sort.Strings(out)
	return out
}

func envKeys(t reflect.Type, prefix []string) [][]string {
	var out [][]string
	for i := range t.NumField() {
		f := t.Field(i)
		name := tagName(f)
		if !f.IsExported() || name == "" {
			continue
		}
		key := append(append([]string(nil), prefix...), name)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, envKeys(f.Type, key)...)
			continue
		}
		if envSettable(f.Type) {
			out = append(out, key)
		}
	}
	return out
}

// joinLines joins one-line problems into one error, one line each.
func joinLines(lines []string) error {
	errs := make([]error, len(lines))
	for i, l := range lines {
		errs[i] = errors.New(l)
	}
	return errors.Join(errs...)
}
