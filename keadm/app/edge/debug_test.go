package edge

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"slices"
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

// deviceTwinSchema is DeviceTwin's schema, copied from edge/devicetwin/store.go (unexported there): these are
// KubeEdge's tables, so the test pins the format keadm reads rather than whatever DeviceTwin writes today.
var deviceTwinSchema = []string{
	`CREATE TABLE IF NOT EXISTS device (
		id varchar(64) NOT NULL PRIMARY KEY,
		name text, description text, state text, last_online text)`,
	`CREATE TABLE IF NOT EXISTS device_attr (
		id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
		deviceid text, name text, description text, value text,
		optional bool, attr_type text, metadata text)`,
	`CREATE TABLE IF NOT EXISTS device_twin (
		id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
		deviceid text, name text, description text, expected text, actual text,
		expected_meta text, actual_meta text, expected_version text, actual_version text,
		optional bool, attr_type text, metadata text)`,
}

// deviceDB adds DeviceTwin's tables and rows to the MetaManager database of debugDB, as on a real node where
// both share edgecore.db. schema picks the tables, so a node whose DeviceTwin never ran can be built too.
func deviceDB(t *testing.T, schema []string, stmts ...string) string {
	t.Helper()
	path := debugDB(t)
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, s := range append(slices.Clone(schema), stmts...) {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return path
}

// testDevices are written the way DeviceTwin writes them: plain values in expected/actual, JSON in the _meta and
// _version columns, NULL for a value never set.
var testDevices = []string{
	`INSERT INTO device (id, name, description, state, last_online) VALUES
		('sensor', 'sensor', 'hall sensor', 'online', '2026-03-01T11:55:00Z'),
		('prod/pump', 'pump', '', 'offline', NULL),
		('broken', 'broken', NULL, NULL, 'yesterday')`,
	`INSERT INTO device_twin (deviceid, name, expected, actual, expected_meta, actual_meta, expected_version,
		actual_version, optional, attr_type, metadata) VALUES
		('sensor', 'status', 'ON', '13', '{"timestamp":1772366100000}', '{"timestamp":1772366340000}',
			'{"cloud":3,"edge":0}', '{"cloud":0,"edge":7}', 0, 'string', '{}'),
		('sensor', 'level', NULL, '0.5', NULL, '{"timestamp":1772366340000}', '{"cloud":0,"edge":0}',
			'{"cloud":0,"edge":1}', 1, 'float', '{}'),
		('sensor', 'gone', NULL, NULL, NULL, NULL, NULL, NULL, 1, 'deleted', '{}'),
		('prod/pump', 'speed', '1200', '1180', '{"timestamp":1772366100000}', '{"timestamp":1772366100000}',
			NULL, NULL, 0, 'int', '{}'),
		('broken', 'mode', '{"value":', '{"value":"ON"}', 'not json', '{"timestamp":', 'x', 'y', 0, NULL, NULL),
		('broken', 'list', 'a,b', 'a b', '{"timestamp":"soon"}', '', NULL, NULL, 0, 'string', NULL),
		('ghost', 'status', 'ON', 'ON', NULL, NULL, NULL, NULL, 0, 'string', NULL)`,
}

func TestDebugGetDevices(t *testing.T) {
	db := deviceDB(t, deviceTwinSchema, testDevices...)
	noTwins := deviceDB(t, deviceTwinSchema[:1], `INSERT INTO device (id, state) VALUES ('bare', 'unknown')`)
	noTables := debugDB(t)
	old := debugNow
	debugNow = func() time.Time { return testNow }
	t.Cleanup(func() { debugNow = old })

	tests := []struct {
		name string
		db   string
		args []string
		want string
	}{
		{"list skips namespaced ids of other namespaces", db, []string{"devices"}, `
NAME     STATE    TWINS                                                      LAST-ONLINE
broken   <none>   list="a,b"/"a b",mode="{\"value\":"/"{\"value\":\"ON\"}"   yesterday
sensor   online   level=/0.5,status=ON/13                                    5m
`},
		{"all namespaces", db, []string{"device", "-A"}, `
NAMESPACE   NAME     STATE     TWINS                                                      LAST-ONLINE
            broken   <none>    list="a,b"/"a b",mode="{\"value\":"/"{\"value\":\"ON\"}"   yesterday
prod        pump     offline   speed=1200/1180                                            <none>
            sensor   online    level=/0.5,status=ON/13                                    5m
`},
		{"namespace", db, []string{"devices", "-n", "prod"}, `
NAMESPACE   NAME     STATE     TWINS                                                      LAST-ONLINE
            broken   <none>    list="a,b"/"a b",mode="{\"value\":"/"{\"value\":\"ON\"}"   yesterday
prod        pump     offline   speed=1200/1180                                            <none>
            sensor   online    level=/0.5,status=ON/13                                    5m
`},
		{"by name", db, []string{"device", "sensor"}, `
NAME     STATE    TWINS                     LAST-ONLINE
sensor   online   level=/0.5,status=ON/13   5m
`},
		{"by namespace and name", db, []string{"device", "pump", "-n", "prod"}, `
NAMESPACE   NAME   STATE     TWINS             LAST-ONLINE
prod        pump   offline   speed=1200/1180   <none>
`},
		{"by id", db, []string{"device", "prod/pump"}, `
NAMESPACE   NAME   STATE     TWINS             LAST-ONLINE
prod        pump   offline   speed=1200/1180   <none>
`},
		{"no twin table", noTwins, []string{"devices"}, `
NAME   STATE     TWINS    LAST-ONLINE
bare   unknown   <none>   <none>
`},
		{"no device tables", noTables, []string{"devices"}, "\nNo resources found in " + noTables + "\n"},
		{"no device tables in all", noTables, []string{"all", "-n", "kube-system"}, `
NAMESPACE     NAME      READY   STATUS        RESTARTS   AGE
kube-system   pod/dns   0/1     Terminating   0          30s

NAME         STATUS   AGE    VERSION
node/edge1   Ready    120m   v1.37.2-tether
`},
		{"all", db, []string{"all", "-n", "kube-system"}, `
NAMESPACE     NAME      READY   STATUS        RESTARTS   AGE
kube-system   pod/dns   0/1     Terminating   0          30s

NAME         STATUS   AGE    VERSION
node/edge1   Ready    120m   v1.37.2-tether

NAME            STATE    TWINS                                                      LAST-ONLINE
device/broken   <none>   list="a,b"/"a b",mode="{\"value\":"/"{\"value\":\"ON\"}"   yesterday
device/sensor   online   level=/0.5,status=ON/13                                    5m
`},
		{"json", db, []string{"device", "sensor", "-o", "json"}, `
{
    "apiVersion": "devices.kubeedge.io/v1alpha2",
    "kind": "Device",
    "metadata": {
        "name": "sensor",
        "labels": {
            "description": "hall sensor"
        },
        "annotations": {
            "tether.io/device-last-online": "2026-03-01T11:55:00Z",
            "tether.io/device-state": "online"
        }
    },
    "status": {
        "twins": [
            {
                "propertyName": "level",
                "desired": {
                    "value": "",
                    "metadata": {
                        "type": "float"
                    }
                },
                "reported": {
                    "value": "0.5",
                    "metadata": {
                        "timestamp": "1772366340000",
                        "type": "float"
                    }
                }
            },
            {
                "propertyName": "status",
                "desired": {
                    "value": "ON",
                    "metadata": {
                        "timestamp": "1772366100000",
                        "type": "string"
                    }
                },
                "reported": {
                    "value": "13",
                    "metadata": {
                        "timestamp": "1772366340000",
                        "type": "string"
                    }
                }
            }
        ]
    }
}
`},
		{"yaml", db, []string{"device", "prod/pump", "-o", "yaml"}, `
apiVersion: devices.kubeedge.io/v1alpha2
kind: Device
metadata:
  annotations:
    tether.io/device-state: offline
  name: pump
  namespace: prod
status:
  twins:
  - desired:
      metadata:
        timestamp: "1772366100000"
        type: int
      value: "1200"
    propertyName: speed
    reported:
      metadata:
        timestamp: "1772366100000"
        type: int
      value: "1180"
`},
		// Values are shown as stored: only the _meta columns are JSON, and a broken one costs the timestamp.
		{"malformed yaml", db, []string{"device", "broken", "-o", "yaml"}, `
apiVersion: devices.kubeedge.io/v1alpha2
kind: Device
metadata:
  annotations:
    tether.io/device-last-online: yesterday
  name: broken
status:
  twins:
  - desired:
      metadata:
        type: string
      value: a,b
    propertyName: list
    reported:
      metadata:
        type: string
      value: a b
  - desired:
      metadata:
        type: string
      value: '{"value":'
    propertyName: mode
    reported:
      metadata:
        type: string
      value: '{"value":"ON"}'
`},
		{"no device tables json", noTables, []string{"devices", "-o", "json"}, `
{
    "apiVersion": "v1",
    "items": [],
    "kind": "List"
}
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runDebugGet(t, tt.db, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.TrimPrefix(tt.want, "\n"); out != want {
				t.Errorf("got\n%s\nwant\n%s", out, want)
			}
		})
	}
}

func TestDebugGetDevicesList(t *testing.T) {
	db := deviceDB(t, deviceTwinSchema, testDevices...)
	out, err := runDebugGet(t, db, "devices", "-A", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Kind  string
		Items []debugDevice
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Kind != "List" {
		t.Fatalf("-o json of several printed %q (%v), want a List", out, err)
	}
	var got []string
	for _, d := range list.Items {
		got = append(got, d.Metadata.Namespace+"/"+d.Metadata.Name)
	}
	if want := []string{"/broken", "prod/pump", "/sensor"}; !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
}

func TestDebugGetDevicesErrors(t *testing.T) {
	db := deviceDB(t, deviceTwinSchema, testDevices...)
	noTables := debugDB(t)
	for _, tt := range []struct {
		name string
		db   string
		args []string
		want string
	}{
		{"unknown", db, []string{"device", "nope"}, `device "nope" not found in ` + db},
		{"other namespace", db, []string{"device", "pump"}, `device "pump" not found in ` + db},
		{"wrong id", db, []string{"device", "default/pump", "-A"}, `device "default/pump" not found in ` + db},
		{"ghost with twins only", db, []string{"device", "ghost"}, `device "ghost" not found in ` + db},
		{"no device tables", noTables, []string{"device", "sensor"}, `device "sensor" not found in ` + noTables},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runDebugGet(t, tt.db, tt.args...)
			wantErr(t, err, tt.want)
		})
	}
}

func TestDebugLastOnline(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.Local)
	for _, tt := range []struct{ in, want string }{
		{"", "<none>"},
		{"2026-03-01 11:00:00", "60m"}, // KubeEdge's layout, in the node's local time
		{now.Add(-3 * time.Hour).UTC().Format(time.RFC3339), "3h"},
		{"last tuesday", "last tuesday"},
	} {
		if got := lastOnline(tt.in, now); got != tt.want {
			t.Errorf("lastOnline(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
