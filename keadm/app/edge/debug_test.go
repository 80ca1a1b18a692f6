package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/edge/metamanager/store"
	"github.com/tether-edge/tether/keadm/app/paths"
)

// debugDB writes rows the way MetaManager does, through its store, into a temp edgecore.db.
func debugDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgecore.db")
	st, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows := []store.Meta{
		{Key: "default/pod/web", Type: "pod", Value: `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"default","uid":"u1","creationTimestamp":"2026-03-01T11:00:00Z"},
			"spec":{"nodeName":"edge1","containers":[{"name":"app","image":"testapp"}]},"status":{"phase":"Pending"}}`},
		// edged's status patch, newer than the cloud's copy of the pod.
		{Key: "default/podpatch/web", Type: "podpatch", Value: `{"metadata":{"uid":"u1"},"status":{"phase":"Running","podIP":"127.0.0.1",
			"containerStatuses":[{"name":"app","ready":true,"restartCount":2,"image":"testapp","imageID":"","state":{"running":{}}}]}}`},
		{Key: "default/pod/crash", Type: "pod", Value: `{"metadata":{"name":"crash","namespace":"default","uid":"u2","creationTimestamp":"2026-02-27T12:00:00Z"},
			"spec":{"containers":[{"name":"a","image":"x"},{"name":"b","image":"x"}]},"status":{"phase":"Running","containerStatuses":[
			{"name":"a","ready":true,"restartCount":0,"image":"x","imageID":"","state":{"running":{}}},
			{"name":"b","ready":false,"restartCount":7,"image":"x","imageID":"","state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}}`},
		// A patch left from an older pod of the same name must not leak into the new one.
		{Key: "default/podpatch/crash", Type: "podpatch", Value: `{"metadata":{"uid":"old"},"status":{"phase":"Failed"}}`},
		{Key: "kube-system/pod/dns", Type: "pod", Value: `{"metadata":{"name":"dns","namespace":"kube-system","uid":"u3","creationTimestamp":"2026-03-01T11:59:30Z",
			"deletionTimestamp":"2026-03-01T12:00:00Z"},"spec":{"containers":[{"name":"d","image":"x"}]},"status":{"phase":"Running"}}`},
		{Key: "default/node/edge1", Type: "node", Value: `{"metadata":{"name":"edge1","creationTimestamp":"2026-03-01T10:00:00Z"},
			"status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.37.2-tether"},"addresses":[{"type":"InternalIP","address":"10.0.0.5"}]}}`},
		{Key: "default/configmap/settings", Type: "configmap", Value: `{"metadata":{"name":"settings","namespace":"default","creationTimestamp":"2026-03-01T11:58:00Z"},"data":{"a":"1","b":"2"}}`},
		{Key: "default/secret/creds", Type: "secret", Value: `{"metadata":{"name":"creds","namespace":"default","creationTimestamp":"2026-03-01T11:58:00Z"},"type":"Opaque","data":{"p":"eA=="}}`},
	}
	for _, r := range rows {
		if _, err := st.Upsert(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func runDebugGet(t *testing.T, db string, args ...string) (string, error) {
	t.Helper()
	layout := &paths.Layout{Root: "/"}
	cmd := newDebugGetCommand(layout)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--db", db))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), err
}

func TestDebugGet(t *testing.T) {
	db := debugDB(t)
	old := debugNow
	debugNow = func() time.Time { return testNow }
	t.Cleanup(func() { debugNow = old })

	tests := []struct {
		args []string
		want string
	}{
		{[]string{"pods"}, `
NAMESPACE   NAME    READY   STATUS             RESTARTS   AGE
default     crash   1/2     CrashLoopBackOff   7          2d
default     web     1/1     Running            2          60m
`},
		{[]string{"po", "-A", "-o", "wide"}, `
NAMESPACE     NAME    READY   STATUS             RESTARTS   AGE   IP          NODE
default       crash   1/2     CrashLoopBackOff   7          2d    <none>      <none>
default       web     1/1     Running            2          60m   127.0.0.1   edge1
kube-system   dns     0/1     Terminating        0          30s   <none>      <none>
`},
		{[]string{"pod", "web"}, `
NAMESPACE   NAME   READY   STATUS    RESTARTS   AGE
default     web    1/1     Running   2          60m
`},
		{[]string{"nodes", "-o", "wide"}, `
NAME    STATUS   AGE    VERSION          INTERNAL-IP
edge1   Ready    120m   v1.37.2-tether   10.0.0.5
`},
		{[]string{"cm"}, `
NAMESPACE   NAME       DATA   AGE
default     settings   2      2m
`},
		{[]string{"services"}, "\nNo resources found in namespace default in " + db + "\n"},
		{[]string{"all"}, `
NAMESPACE   NAME        READY   STATUS             RESTARTS   AGE
default     pod/crash   1/2     CrashLoopBackOff   7          2d
default     pod/web     1/1     Running            2          60m

NAME         STATUS   AGE    VERSION
node/edge1   Ready    120m   v1.37.2-tether

NAMESPACE   NAME                 DATA   AGE
default     configmap/settings   2      2m

NAMESPACE   NAME           TYPE     DATA   AGE
default     secret/creds   Opaque   1      2m
`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := runDebugGet(t, db, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.TrimPrefix(tt.want, "\n"); out != want {
				t.Errorf("got\n%s\nwant\n%s", out, want)
			}
		})
	}
}

func TestDebugGetJSON(t *testing.T) {
	db := debugDB(t)
	out, err := runDebugGet(t, db, "pod", "web", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var pod map[string]any
	if err := json.Unmarshal([]byte(out), &pod); err != nil || pod["kind"] != "Pod" {
		t.Fatalf("-o json printed %q (%v), want the pod", out, err)
	}
	out, err = runDebugGet(t, db, "pods", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Kind  string
		Items []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Kind != "List" || len(list.Items) != 2 {
		t.Fatalf("-o json of several printed %q (%v), want a List of 2", out, err)
	}
	out, err = runDebugGet(t, db, "cm", "settings", "-o", "yaml")
	if err != nil || !strings.Contains(out, "data:\n  a: \"1\"\n") || !strings.Contains(out, "name: settings") {
		t.Fatalf("-o yaml printed %q (%v)", out, err)
	}
}

func TestDebugGetErrors(t *testing.T) {
	db := debugDB(t)
	for _, tt := range []struct {
		args []string
		db   string
		want string
	}{
		{[]string{"pod", "nope"}, db, `pod "nope" not found in namespace default in ` + db},
		{[]string{"widgets"}, db, `unknown type "widgets": want one of pods, nodes, configmaps, secrets, services, endpoints, devices, devicemodels, or all`},
		{[]string{"pods", "-o", "xml"}, db, `-o "xml": want json, yaml or wide`},
		{[]string{"all", "x"}, db, "get all takes no NAME"},
		{[]string{"pods"}, "/nonexistent/edgecore.db", "no edge database at /nonexistent/edgecore.db: is this host joined? (or point --db at edgecore.db)"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := runDebugGet(t, tt.db, tt.args...)
			wantErr(t, err, tt.want)
		})
	}
}
