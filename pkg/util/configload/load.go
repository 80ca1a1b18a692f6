// Package configload is the strict YAML loader behind every versioned
// component config's Load (and the encoder that prints one). It knows nothing
// of command lines, so API packages can use it without a CLI framework.
package configload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Type tells the loader which document it expects.
type Type struct {
	APIVersion string
	Kind       string
	// Accepted lists dotted paths that KubeEdge defines but Tether does not
	// implement. They are dropped before strict decoding so that a KubeEdge
	// file loads unchanged, while any other unknown key still fails as a typo.
	Accepted []string
	// FailClosed lists dotted paths of KubeEdge security settings Tether does
	// not implement. A file that turns one on is refused: the operator asked
	// for a protection that would not be there.
	FailClosed []string
}

// Object is a config that can check itself after decoding.
type Object interface {
	Validate() field.ErrorList
}

// Load reads the YAML file at path over obj, which must already hold the
// defaults (absent or null keys keep them), then validates obj. Every error
// names the file; decoding and validation errors also name the field.
func Load(path string, obj Object, t Type) error {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already in our prefix
		}
		return fmt.Errorf("loading config %s: %w", path, err)
	}
	ignored, err := Decode(data, obj, t)
	if err != nil {
		return fmt.Errorf("loading config %s: %w", path, err)
	}
	if errs := obj.Validate(); len(errs) > 0 {
		return fmt.Errorf("loading config %s: %w", path, errs.ToAggregate())
	}
	logIgnored(path, ignored)
	return nil
}

// logIgnored makes sure a KubeEdge feature someone switched on does not go
// missing quietly; the full list of ignored keys is only interesting when
// debugging.
func logIgnored(path string, ignored map[string]any) {
	if len(ignored) == 0 {
		return
	}
	var enabled []string
	for _, p := range slices.Sorted(maps.Keys(ignored)) {
		if section, ok := ignored[p].(map[string]any); ok && section["enable"] == true {
			enabled = append(enabled, p)
		}
	}
	if len(enabled) > 0 {
		klog.InfoS("Config enables KubeEdge features that Tether does not implement; they will not run", "file", path, "sections", enabled)
	}
	klog.V(1).InfoS("Ignoring KubeEdge settings that Tether does not implement", "file", path, "fields", slices.Sorted(maps.Keys(ignored)))
}

// Decode strictly decodes the YAML document data over obj (a pointer to a
// struct). It rejects a wrong or missing apiVersion/kind, duplicate keys and
// unknown fields, and returns the values of the t.Accepted paths it found.
func Decode(data []byte, obj any, t Type) (ignored map[string]any, err error) {
	jsonData, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(jsonData))
	dec.UseNumber() // keep integers exact through the re-encode below
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	if doc == nil {
		return nil, errors.New("file is empty")
	}
	root, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("top level must be a mapping with apiVersion and kind, got %s", jsonKind(doc))
	}
	if errs := checkType(root, t); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	dropNulls(root)
	for _, p := range t.FailClosed {
		if v, ok := lookup(root, strings.Split(p, ".")); ok && enabled(v) {
			return nil, fmt.Errorf("%s: security setting is turned on, but Tether does not implement it; remove it or set it to false", p)
		}
	}
	ignored = map[string]any{}
	for _, p := range t.Accepted {
		if v, ok := drop(root, strings.Split(p, ".")); ok {
			ignored[p] = v
		}
	}
	cleaned, err := json.Marshal(root)
	if err != nil {
		return nil, fmt.Errorf("re-encoding config: %w", err)
	}
	strictErrs, err := sigsjson.UnmarshalStrict(cleaned, obj)
	if err != nil {
		return nil, locate(root, obj, err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return nil, errors.New(strings.Join(msgs, ", "))
	}
	return ignored, nil
}

// lookup returns the value at path without changing m.
func lookup(m map[string]any, path []string) (any, bool) {
	for i, k := range path {
		v, ok := m[k]
		if !ok {
			return nil, false
		}
		if i == len(path)-1 {
			return v, true
		}
		if m, ok = v.(map[string]any); !ok {
			return nil, false
		}
	}
	return nil, false
}

// enabled reports whether a decoded YAML value asks for something: anything but false, zero, "" and empty.
func enabled(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case json.Number:
		return x.String() != "0"
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

func checkType(root map[string]any, t Type) field.ErrorList {
	var errs field.ErrorList
	check := func(key, want string) {
		p := field.NewPath(key)
		v := root[key]
		got, isString := v.(string)
		switch {
		case v == nil || (isString && got == ""):
			errs = append(errs, field.Required(p, fmt.Sprintf("must be %q", want)))
		case !isString:
			errs = append(errs, field.Invalid(p, v, fmt.Sprintf("must be %q", want)))
		case got != want:
			errs = append(errs, field.NotSupported(p, got, []string{want}))
		}
	}
	check("apiVersion", t.APIVersion)
	check("kind", t.Kind)
	return errs
}

// dropNulls removes null map values so that "key:" with nothing after it, or
// a section whose children are all commented out, means "use the default"
// instead of wiping the default out.
func dropNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if child == nil {
				delete(v, k)
				continue
			}
			dropNulls(child)
		}
	case []any:
		for _, child := range v {
			dropNulls(child)
		}
	}
}

// drop removes the value at path from m and returns it.
func drop(m map[string]any, path []string) (any, bool) {
	child, ok := m[path[0]]
	if !ok {
		return nil, false
	}
	if len(path) == 1 {
		delete(m, path[0])
		return child, true
	}
	next, ok := child.(map[string]any)
	if !ok {
		return nil, false
	}
	return drop(next, path[1:])
}

var typeErrRE = regexp.MustCompile(`cannot unmarshal (.+) into Go (?:struct field \S+|value) of type (\S+)`)

// locate turns a decode error into "<field path>: <problem>". Errors from
// custom unmarshalers (durations, for one) carry no path, so on failure each
// leaf is decoded alone into a fresh object until the culprit is found; this
// runs only on the error path and configs are small.
func locate(root map[string]any, obj any, decodeErr error) error {
	typ := reflect.TypeOf(obj).Elem()
	for _, leaf := range leaves(root, nil) {
		single := nest(leaf.path, leaf.value)
		b, err := json.Marshal(single)
		if err != nil {
			continue
		}
		if _, err := sigsjson.UnmarshalStrict(b, reflect.New(typ).Interface()); err != nil {
			return fmt.Errorf("%s: %s", strings.Join(leaf.path, "."), describe(err))
		}
	}
	return errors.New(describe(decodeErr))
}

func describe(err error) string {
	msg := err.Error()
	if m := typeErrRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("Invalid type: got %s, want %s", m[1], m[2])
	}
	return strings.TrimPrefix(msg, "json: ")
}

type leaf struct {
	path  []string
	value any
}

// leaves lists scalar and list values in key order, so the first failing one
// is reported deterministically.
func leaves(m map[string]any, prefix []string) []leaf {
	var out []leaf
	for _, k := range slices.Sorted(maps.Keys(m)) {
		p := append(slices.Clone(prefix), k)
		if child, ok := m[k].(map[string]any); ok && len(child) > 0 {
			out = append(out, leaves(child, p)...)
			continue
		}
		out = append(out, leaf{path: p, value: m[k]})
	}
	return out
}

func nest(path []string, v any) map[string]any {
	if len(path) == 1 {
		return map[string]any{path[0]: v}
	}
	return map[string]any{path[0]: nest(path[1:], v)}
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// Marshal renders obj as YAML with apiVersion and kind first, where readers
// look for them; the remaining keys stay sorted.
func Marshal(obj any) ([]byte, error) {
	out, err := yaml.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var head, body []string
	for _, line := range strings.SplitAfter(string(out), "\n") {
		if strings.HasPrefix(line, "apiVersion: ") || strings.HasPrefix(line, "kind: ") {
			head = append(head, line)
			continue
		}
		body = append(body, line)
	}
	return []byte(strings.Join(head, "") + strings.Join(body, "")), nil
}
