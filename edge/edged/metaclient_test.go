package edged

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

func TestDecodeReply(t *testing.T) {
	req := model.NewMessage("").BuildRouter(modules.Edged, modules.MetaGroup, "default/nodepatch/edge-1", model.PatchOperation)
	resp := func(content any) model.Message { return *model.NewRespByMessage(req, content) }
	tests := []struct {
		name         string
		msg          model.Message
		want         string
		unreachable  bool
		notFound     bool
		alreadyExist bool
		rejected     bool
	}{
		{name: "OK string", msg: resp("OK")},
		{name: "OK as raw JSON", msg: resp(json.RawMessage(`"OK"`))},
		{name: "MetaManager error", msg: *model.NewErrorMessage(req, "not connected"), unreachable: true},
		{name: "ObjectResp, null Err", msg: resp(json.RawMessage(`{"Object":{"metadata":{"name":"n"}},"Err":null}`)), want: `{"metadata":{"name":"n"}}`},
		{name: "ObjectResp, empty StatusError", msg: resp(json.RawMessage(`{"Object":{"kind":"Node"},"Err":{"ErrStatus":{"metadata":{}}}}`)), want: `{"kind":"Node"}`},
		{name: "ObjectResp, NotFound", msg: resp(json.RawMessage(`{"Object":null,"Err":{"ErrStatus":{"status":"Failure","reason":"NotFound","code":404,"message":"pods \"x\" not found"}}}`)), notFound: true, rejected: true},
		{name: "ObjectResp, AlreadyExists", msg: resp(map[string]any{"Object": nil, "Err": map[string]any{"ErrStatus": map[string]any{"reason": "AlreadyExists", "code": 409}}}), alreadyExist: true, rejected: true},
		{name: "ObjectResp, string Err", msg: resp(json.RawMessage(`{"Object":null,"Err":"boom"}`)), rejected: true},
		{name: "bare StatusError", msg: resp(json.RawMessage(`{"ErrStatus":{"status":"Failure","reason":"NotFound","code":404}}`)), notFound: true, rejected: true},
		{name: "bare error string", msg: resp(`configmaps "x" not found`), notFound: true, rejected: true},
		{name: "plain object", msg: resp(json.RawMessage(`{"kind":"ConfigMap"}`)), want: `{"kind":"ConfigMap"}`},
		{name: "database list", msg: resp([]string{`{"kind":"Pod"}`}), want: `["{\"kind\":\"Pod\"}"]`},
	}
	for _, tt := range tests {
		got, err := decodeReply(tt.msg)
		var rej *rejectedError
		switch {
		case errors.Is(err, errUnreachable) != tt.unreachable:
			t.Errorf("%s: err = %v, unreachable want %v", tt.name, err, tt.unreachable)
		case errors.As(err, &rej) != tt.rejected:
			t.Errorf("%s: err = %v, rejected want %v", tt.name, err, tt.rejected)
		case isNotFound(err) != tt.notFound || isAlreadyExists(err) != tt.alreadyExist:
			t.Errorf("%s: err = %v, notFound want %v, alreadyExists want %v", tt.name, err, tt.notFound, tt.alreadyExist)
		case string(got) != tt.want:
			t.Errorf("%s: payload = %s, want %s", tt.name, got, tt.want)
		}
	}
}

// responder is a MetaManager that answers every request with reply(request).
type responder struct {
	bus   *beehive.Bus
	reply func(*model.Message) *model.Message
}

func (r *responder) Name() string  { return modules.MetaManager }
func (r *responder) Group() string { return modules.MetaGroup }
func (r *responder) Enable() bool  { return true }
func (r *responder) Start(ctx context.Context) error {
	for {
		msg, err := r.bus.Receive(ctx, modules.MetaManager)
		if err != nil {
			return nil
		}
		if resp := r.reply(&msg); resp != nil {
			_ = r.bus.SendResp(*resp)
		}
	}
}

func TestObjectGetter(t *testing.T) {
	cm := `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"namespace":"ns1","name":"cm1"},"data":{"key":"v"}}`
	tests := []struct {
		name     string
		reply    func(*model.Message) *model.Message
		want     string
		notFound bool
		failed   bool
	}{
		{name: "relayed from the cloud", reply: func(m *model.Message) *model.Message {
			return model.NewRespByMessage(m, json.RawMessage(cm))
		}, want: "v"},
		{name: "from the database", reply: func(m *model.Message) *model.Message {
			return model.NewRespByMessage(m, []string{cm})
		}, want: "v"},
		{name: "database, wire form", reply: func(m *model.Message) *model.Message {
			b, _ := json.Marshal([]string{cm})
			return model.NewRespByMessage(m, json.RawMessage(b))
		}, want: "v"},
		{name: "ObjectResp", reply: func(m *model.Message) *model.Message {
			return model.NewRespByMessage(m, json.RawMessage(`{"Object":`+cm+`,"Err":null}`))
		}, want: "v"},
		{name: "absent from the database", reply: func(m *model.Message) *model.Message {
			return model.NewRespByMessage(m, []string{})
		}, notFound: true},
		{name: "cloud says not found", reply: func(m *model.Message) *model.Message {
			return model.NewRespByMessage(m, `configmaps "cm1" not found`)
		}, notFound: true},
		{name: "MetaManager error", reply: func(m *model.Message) *model.Message {
			return model.NewErrorMessage(m, "remote query timed out")
		}, failed: true},
		{name: "no answer", reply: func(*model.Message) *model.Message { return nil }, failed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			bus := beehive.New(beehive.Options{})
			var mu sync.Mutex
			var seen model.Message
			r := &responder{bus: bus, reply: func(m *model.Message) *model.Message {
				mu.Lock()
				seen = *m
				mu.Unlock()
				return tt.reply(m)
			}}
			if err := bus.Register(r); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- bus.Run(ctx) }()
			defer func() { cancel(); <-done }()

			g := objectGetter{c: &metaClient{bus: bus, timeout: 200 * time.Millisecond}}
			got, err := g.GetConfigMap(ctx, "ns1", "cm1")
			switch {
			case tt.notFound:
				if !apierrors.IsNotFound(err) {
					t.Fatalf("err = %v, want NotFound", err)
				}
			case tt.failed:
				if err == nil || apierrors.IsNotFound(err) {
					t.Fatalf("err = %v, want a failure that is not NotFound", err)
				}
			case err != nil:
				t.Fatal(err)
			case got.Data["key"] != tt.want:
				t.Errorf("data = %v", got.Data)
			}
			mu.Lock()
			defer mu.Unlock()
			if seen.Router.Resource != "ns1/configmap/cm1" || seen.Router.Operation != model.QueryOperation ||
				seen.Router.Source != modules.Edged {
				t.Errorf("query = %+v", seen.Router)
			}
		})
	}
}

func TestSecretFromDatabase(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	bus := beehive.New(beehive.Options{})
	r := &responder{bus: bus, reply: func(m *model.Message) *model.Message {
		if m.Router.Resource != "ns1/secret/s1" {
			return model.NewErrorMessage(m, "unexpected "+m.Router.Resource)
		}
		return model.NewRespByMessage(m, []string{`{"kind":"Secret","metadata":{"name":"s1"},"data":{"k":"dmFsdWU="}}`})
	}}
	if err := bus.Register(r); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- bus.Run(ctx) }()
	defer func() { cancel(); <-done }()

	s, err := objectGetter{c: &metaClient{bus: bus, timeout: time.Second}}.GetSecret(ctx, "ns1", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Data["k"]) != "value" {
		t.Errorf("data = %q", s.Data)
	}
}
