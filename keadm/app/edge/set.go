package edge

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var durationType = reflect.TypeFor[metav1.Duration]()

// applySet applies one --set key=value to cfg (a pointer to a config struct). The key is a dotted path of the
// YAML field names, so it reads like the file; the value is parsed by the type of the field it lands on, so a
// typo or a wrong type fails here, naming the flag, rather than as a config error after the join started.
//
// Maps take either the whole value ("nodeLabels=a=1,b=2") or one entry ("nodeLabels.a=1"); lists are
// comma-separated; an empty value clears strings, lists and maps.
func applySet(cfg any, kv string) error {
	key, value, ok := strings.Cut(kv, "=")
	if !ok || key == "" {
		return fmt.Errorf("--set %q: want key=value, e.g. modules.edged.nodeIP=10.0.0.5", kv)
	}
	if err := setPath(reflect.ValueOf(cfg).Elem(), strings.Split(key, "."), nil, value); err != nil {
		return fmt.Errorf("--set %s: %w", kv, err)
	}
	return nil
}

func setPath(v reflect.Value, path, done []string, value string) error {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	where := "the config"
	if len(done) > 0 {
		where = strings.Join(done, ".")
	}
	if len(path) == 0 {
		return setValue(v, where, value)
	}
	name := path[0]
	switch {
	case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String && len(path) == 1:
		// One map entry, e.g. modules.edged.nodeLabels.zone=north.
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		if err := setValue(elem, where+"."+name, value); err != nil {
			return err
		}
		v.SetMapIndex(reflect.ValueOf(name).Convert(v.Type().Key()), elem)
		return nil
	case v.Kind() != reflect.Struct || v.Type() == durationType:
		return fmt.Errorf("%s is a %s, not a section: nothing below it to set", where, typeName(v.Type()))
	}
	fields := jsonFields(v.Type())
	idx, ok := fields[name]
	if !ok {
		return unknownField(name, where, fields)
	}
	return setPath(v.FieldByIndex(idx), path[1:], append(done, name), value)
}

// jsonFields maps a struct's YAML (json tag) names to field indexes, following inlined embedded structs.
func jsonFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if f.Anonymous && tag == "" && strings.Contains(opts, "inline") {
			for k, idx := range jsonFields(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		out[tag] = []int{i}
	}
	return out
}

func unknownField(name, where string, fields map[string][]int) error {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if strings.EqualFold(k, name) {
			return fmt.Errorf("unknown field %q in %s (did you mean %q?)", name, where, k)
		}
	}
	return fmt.Errorf("unknown field %q in %s; known fields: %s", name, where, strings.Join(names, ", "))
}

func setValue(v reflect.Value, where, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s wants a duration such as 10s: %w", where, err)
		}
		v.Set(reflect.ValueOf(metav1.Duration{Duration: d}))
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return setValue(v.Elem(), where, s)
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s wants true or false, got %q", where, s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%s wants a %d-bit integer, got %q", where, v.Type().Bits(), s)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%s wants a non-negative %d-bit integer, got %q", where, v.Type().Bits(), s)
		}
		v.SetUint(n)
	case reflect.Slice:
		list := reflect.MakeSlice(v.Type(), 0, 0)
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item == "" {
				continue
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := setValue(elem, where+"[]", item); err != nil {
				return err
			}
			list = reflect.Append(list, elem)
		}
		v.Set(list)
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("%s cannot be set with --set", where)
		}
		m := reflect.MakeMap(v.Type())
		for pair := range strings.SplitSeq(s, ",") {
			if pair = strings.TrimSpace(pair); pair == "" {
				continue
			}
			k, val, ok := strings.Cut(pair, "=")
			if !ok || k == "" {
				return fmt.Errorf("%s wants k=v[,k=v...], got %q", where, pair)
			}
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := setValue(elem, where+"."+k, val); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), elem)
		}
		v.Set(m)
	case reflect.Struct:
		names := make([]string, 0)
		for k := range jsonFields(v.Type()) {
			names = append(names, k)
		}
		slices.Sort(names)
		return fmt.Errorf("%s is a section; set one of its fields: %s", where, strings.Join(names, ", "))
	default:
		return fmt.Errorf("%s (%s) cannot be set with --set", where, v.Type())
	}
	return nil
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Slice:
		return "list"
	}
	return t.Kind().String()
}
