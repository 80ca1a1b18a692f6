//go:build integration

package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/mattn/go-sqlite3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	devicesv1alpha2 "github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/tests/framework"
)

// deviceEnv is the device path end to end: API server, cloudcore, an edge node with DeviceTwin and EventBus on a
// real MQTT broker (Debian mosquitto, or the one embedded in edgecore), and an MQTT client playing the mapper.
type deviceEnv struct {
	cp       *framework.ControlPlane
	cloud    *framework.Cloud
	edgeCfg  func() *framework.Edge
	edge     *framework.Edge
	broker   string // tcp://host:port the mapper uses
	dbPath   string
	mapper   mqtt.Client
	mu       sync.Mutex
	received map[string][]string // topic -> payloads
}

func startDeviceEnv(t *testing.T, embedded bool) *deviceEnv {
	t.Helper()
	cp := framework.StartControlPlane(t)
	dir := t.TempDir()
	cloud := framework.StartCloud(t, framework.NewCloudConfig(t, cp, filepath.Join(dir, "cloud")))
	cfg := framework.NewEdgeConfig(t, cloud, node, framework.Token(t, cp), filepath.Join(dir, "edge"))
	// The node joins while its name is free, as keadm join does: a join token cannot claim an existing Node. Then
	// stand in for Edged's registration.
	framework.BootstrapEdge(t, cfg)
	if err := cp.Client.Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
		t.Fatal(err)
	}
	cfg.Modules.MetaManager.Enable = true
	eb := cfg.Modules.EventBus
	eb.Enable = true
	var broker string
	if embedded {
		broker = fmt.Sprintf("tcp://127.0.0.1:%d", framework.FreePort(t))
		eb.MQTTMode = 0
		eb.MQTTServerInternal = broker
	} else {
		broker = framework.StartMosquitto(t)
		eb.MQTTMode = 2
		eb.MQTTServerExternal = broker
	}
	cfg.Modules.DeviceTwin.Enable = true
	e := &deviceEnv{cp: cp, cloud: cloud, broker: broker, dbPath: cfg.Database.DataSource, received: map[string][]string{}}
	e.edgeCfg = func() *framework.Edge { return framework.StartEdgeNode(t, cfg) }
	e.edge = e.edgeCfg()
	e.mapper = e.connectMapper(t)
	return e
}

func (e *deviceEnv) connectMapper(t *testing.T) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(e.broker).SetClientID(fmt.Sprintf("test-mapper-%d", time.Now().UnixNano())).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetAutoReconnect(true).
		SetOnConnectHandler(func(c mqtt.Client) {
			for _, topic := range []string{"$hw/events/device/+/twin/+/+", "$hw/events/device/+/twin/+", "$hw/events/node/+/membership/+", "$hw/events/node/+/membership/+/+"} {
				c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
					e.mu.Lock()
					e.received[m.Topic()] = append(e.received[m.Topic()], string(m.Payload()))
					e.mu.Unlock()
				})
			}
		})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("mapper cannot connect to %s: %v", e.broker, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func (e *deviceEnv) publish(t *testing.T, topic, payload string) {
	t.Helper()
	if tok := e.mapper.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publishing to %s: %v", topic, tok.Error())
	}
}

// waitMessage waits for a payload on topic that satisfies match, and returns it.
func (e *deviceEnv) waitMessage(t *testing.T, topic string, match func(string) bool) string {
	t.Helper()
	var got string
	framework.Eventually(t, 30*time.Second, "MQTT message on "+topic, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, p := range e.received[topic] {
			if match(p) {
				got = p
				return true
			}
		}
		return false
	})
	return got
}

func contains(s string) func(string) bool {
	return func(p string) bool { return strings.Contains(p, s) }
}

func (e *deviceEnv) applySeed(t *testing.T) {
	t.Helper()
	crds := filepath.Join(framework.RepoRoot(), "examples", "counter-demo", "crds")
	for _, f := range []string{"kubeedge-counter-model.yaml", "kubeedge-counter-instance.yaml"} {
		framework.Eventually(t, 30*time.Second, "kubectl create -f "+f, func() bool {
			_, err := e.cp.Kubectl(context.Background(), "create", "-f", filepath.Join(crds, f))
			return err == nil
		})
	}
}

func (e *deviceEnv) device(t *testing.T) *devicesv1alpha2.Device {
	t.Helper()
	var d devicesv1alpha2.Device
	if err := e.cp.Client.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: "counter"}, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

func (e *deviceEnv) setDesired(t *testing.T, value string) {
	t.Helper()
	patch := fmt.Sprintf(`[{"op":"replace","path":"/status/twins/0/desired/value","value":%q}]`, value)
	if _, err := e.cp.Kubectl(context.Background(), "patch", "device", "counter", "--type=json", "-p", patch); err != nil {
		t.Fatal(err)
	}
}

func (e *deviceEnv) waitReported(t *testing.T, value string) {
	t.Helper()
	framework.Eventually(t, 30*time.Second, "reported value "+value+" in the API server", func() bool {
		d := e.device(t)
		return len(d.Status.Twins) > 0 && d.Status.Twins[0].Reported.Value == value
	})
}

func mapperUpdate(value string) string {
	return fmt.Sprintf(`{"event_id":"","timestamp":%d,"twin":{"status":{"actual":{"value":%q},"metadata":{"type":"Updated"}}}}`, time.Now().UnixMilli(), value)
}

func TestDeviceTwinEndToEnd(t *testing.T) {
	for _, mode := range []struct {
		name     string
		embedded bool
	}{{"mosquitto", false}, {"embedded broker", true}} {
		t.Run(mode.name, func(t *testing.T) {
			e := startDeviceEnv(t, mode.embedded)
			e.applySeed(t)

			// The device reaches the edge database and the membership is announced.
			e.waitMessage(t, "$hw/events/node/"+node+"/membership/updated", contains(`"counter"`))
			db, err := sql.Open("sqlite3", "file:"+e.dbPath+"?mode=ro&_busy_timeout=5000")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var id string
			if err := db.QueryRow(`SELECT id FROM device WHERE name = 'counter'`).Scan(&id); err != nil {
				t.Fatalf("device counter not in the edge database: %v", err)
			}

			// Desired change in the API server -> delta and document at the mapper.
			e.setDesired(t, "ON")
			e.waitMessage(t, "$hw/events/device/counter/twin/update/delta", contains(`"ON"`))
			e.waitMessage(t, "$hw/events/device/counter/twin/update/document", contains(`"ON"`))

			// The mapper reports; the API server's reported value follows, desired untouched.
			e.publish(t, "$hw/events/device/counter/twin/update", mapperUpdate("7"))
			e.waitMessage(t, "$hw/events/device/counter/twin/update/result", contains(`"7"`))
			e.waitReported(t, "7")
			if d := e.device(t); d.Status.Twins[0].Desired.Value != "ON" {
				t.Errorf("desired after a report = %q, want ON", d.Status.Twins[0].Desired.Value)
			}

			// get, and the errors, answered on the result topics.
			e.publish(t, "$hw/events/device/counter/twin/get", `{"event_id":"g1","timestamp":0}`)
			e.waitMessage(t, "$hw/events/device/counter/twin/get/result", contains(`"g1"`))
			e.publish(t, "$hw/events/device/nosuch/twin/get", `{"event_id":"g2","timestamp":0}`)
			e.waitMessage(t, "$hw/events/device/nosuch/twin/get/result", contains(`404`))
			for _, bad := range []string{
				`{"event_id":"malformed",`,
				`{"event_id":"badname","twin":{"no-such-twin!":{"actual":{"value":"1"}}}}`,
			} {
				e.publish(t, "$hw/events/device/counter/twin/update", bad)
			}
			framework.Eventually(t, 30*time.Second, "400 results for both", func() bool {
				e.mu.Lock()
				defer e.mu.Unlock()
				n := 0
				for _, p := range e.received["$hw/events/device/counter/twin/update/result"] {
					if strings.Contains(p, `400`) {
						n++
					}
				}
				return n >= 2
			})

			// Reports made while the link is down reach the API server after reconnect.
			e.cloud.Stop()
			e.publish(t, "$hw/events/device/counter/twin/update", mapperUpdate("42"))
			e.waitMessage(t, "$hw/events/device/counter/twin/update/result", contains(`"42"`))
			e.cloud = framework.StartCloud(t, e.cloud.Config)
			e.waitReported(t, "42")
		})
	}
}

// The mapper's view through Debian's own MQTT clients, as a user would check it.
func TestDeviceTopicsWithMosquittoClients(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		t.Fatal("mosquitto_sub missing: run hack/install-deps.sh")
	}
	e := startDeviceEnv(t, false)
	e.applySeed(t)
	e.waitMessage(t, "$hw/events/node/"+node+"/membership/updated", contains(`"counter"`))
	host, port, _ := strings.Cut(strings.TrimPrefix(e.broker, "tcp://"), ":")

	sub := exec.Command("mosquitto_sub", "-h", host, "-p", port, "-t", "$hw/events/device/counter/twin/update/delta", "-C", "1", "-W", "30")
	out := make(chan string, 1)
	go func() { b, _ := sub.Output(); out <- string(b) }()
	time.Sleep(500 * time.Millisecond) // mosquitto_sub has no ready signal; give it time to subscribe
	e.setDesired(t, "ON")
	if got := <-out; !strings.Contains(got, `"ON"`) {
		t.Fatalf("mosquitto_sub got %q, want a delta with ON", got)
	}

	pub := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", "$hw/events/device/counter/twin/update", "-m", mapperUpdate("5"))
	if b, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, b)
	}
	e.waitReported(t, "5")
	var result struct {
		Twin map[string]struct {
			Actual struct{ Value string } `json:"actual"`
		} `json:"twin"`
	}
	payload := e.waitMessage(t, "$hw/events/device/counter/twin/update/result", contains(`"5"`))
	if err := json.Unmarshal([]byte(payload), &result); err != nil || result.Twin["status"].Actual.Value != "5" {
		t.Errorf("update result = %s (%v), want the status twin at 5", payload, err)
	}
}
