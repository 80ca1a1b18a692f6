package configload

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

type testConfig struct {
	metav1.TypeMeta `json:",inline"`
	Name            string            `json:"name"`
	Port            int32             `json:"port"`
	Period          metav1.Duration   `json:"period"`
	Labels          map[string]string `json:"labels"`
	Sub             *testSub          `json:"sub,omitempty"`
}

type testSub struct {
	Enable bool     `json:"enable"`
	List   []string `json:"list"`
}

func (c *testConfig) Validate() field.ErrorList {
	if c.Port < 1 {
		return field.ErrorList{field.Invalid(field.NewPath("port"), c.Port, "must be positive")}
	}
	return nil
}

var testType = Type{APIVersion: "test.tether.io/v1", Kind: "Test", Accepted: []string{"legacy", "sub.old"}}

func newTestConfig() *testConfig {
	return &testConfig{
		TypeMeta: metav1.TypeMeta{APIVersion: testType.APIVersion, Kind: testType.Kind},
		Name:     "default",
		Port:     80,
		Labels:   map[string]string{"a": "1"},
		Sub:      &testSub{Enable: true, List: []string{"x"}},
	}
}

const testHead = "apiVersion: test.tether.io/v1\nkind: Test\n"

func TestDecodeOverDefaults(t *testing.T) {
	c := newTestConfig()
	ignored, err := Decode([]byte(testHead+`
name:          # null: keep the default
port: 8080
labels: {b: "2"}
sub:
  list: [p, q]
  old: {enable: true}
legacy: 1
`), c, testType)
	if err != nil {
		t.Fatal(err)
	}
	want := newTestConfig()
	want.Port = 8080
	want.Labels["b"] = "2"
	want.Sub.List = []string{"p", "q"}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v, want %+v", c, want)
	}
	if got := map[string]any{"legacy": int64(1), "sub.old": map[string]any{"enable": true}}; !reflect.DeepEqual(normalize(ignored), got) {
		t.Errorf("ignored = %#v, want %#v", ignored, got)
	}
}

// normalize turns json.Number into int64 for comparison.
func normalize(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if n, ok := v.(interface{ Int64() (int64, error) }); ok {
			v, _ = n.Int64()
		}
		out[k] = v
	}
	return out
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown", testHead + "nmae: x", `unknown field "nmae"`},
		{"unknown nested", testHead + "sub: {enabled: true}", `unknown field "sub.enabled"`},
		{"two unknown", testHead + "a: 1\nb: 2", `unknown field "a", unknown field "b"`},
		{"type", testHead + "port: eighty", "port: Invalid type: got string, want int32"},
		{"type in list", testHead + "sub: {list: [1]}", "sub.list: Invalid type: got number, want string"},
		{"custom unmarshaler", testHead + "period: soon", `period: time: invalid duration "soon"`},
		{"kind", "apiVersion: test.tether.io/v1\nkind: Other", `kind: Unsupported value: "Other": supported values: "Test"`},
		{"kind not a string", "apiVersion: test.tether.io/v1\nkind: [x]", `kind: Invalid value: ["x"]: must be "Test"`},
		{"no apiVersion", "kind: Test", `apiVersion: Required value: must be "test.tether.io/v1"`},
		{"empty", "", "file is empty"},
		{"scalar", "hello", "top level must be a mapping with apiVersion and kind, got a string"},
		{"tab", testHead + "\tport: 1", "parsing YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.yaml), newTestConfig(), testType)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", testHead+"port: 1\n")
	if err := Load(good, newTestConfig(), testType); err != nil {
		t.Errorf("good file: %v", err)
	}
	invalid := write("invalid.yaml", testHead+"port: 0\n")
	err := Load(invalid, newTestConfig(), testType)
	if want := "loading config " + invalid + ": port: Invalid value: 0: must be positive"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	unknown := write("unknown.yaml", testHead+"prot: 1\n")
	err = Load(unknown, newTestConfig(), testType)
	if want := "loading config " + unknown + `: unknown field "prot"`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestMarshalPutsTypeFirst(t *testing.T) {
	out, err := Marshal(newTestConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := testHead + `labels:
  a: "1"
name: default
period: 0s
port: 80
sub:
  enable: true
  list:
  - x
`
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}
