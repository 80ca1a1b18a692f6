//go:build integration

package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	devicesv1alpha2 "github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	"github.com/tether-edge/tether/pkg/twin"
	"github.com/tether-edge/tether/tests/framework"
)

// A Device deleted while its edge node is cut off must leave the edge once the link is back: no membership update
// tells the edge (the restarted cloudcore never announced the device), only the full membership/detail resent on
// reconnect does.
func TestDeviceDeletedWhileOfflineLeavesEdge(t *testing.T) {
	e := startDeviceEnv(t, true)
	e.applySeed(t)
	e.waitMessage(t, "$hw/events/node/"+node+"/membership/updated", contains(`"counter"`))
	db, err := sql.Open("sqlite3", "file:"+e.dbPath+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	counterRows := func() int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM device WHERE id = 'counter'`).Scan(&n); err != nil {
			t.Fatalf("reading the edge database: %v", err)
		}
		return n
	}
	framework.Eventually(t, 30*time.Second, "counter in the edge database", func() bool { return counterRows() == 1 })
	e.publish(t, "$hw/events/device/counter/twin/get", `{"event_id":"before"}`)
	e.waitMessage(t, "$hw/events/device/counter/twin/get/result", contains(`"before"`))

	e.cloud.Stop()
	ctx := context.Background()
	dev := e.device(t)
	if err := e.cp.Client.Delete(ctx, dev); err != nil {
		t.Fatal(err)
	}
	framework.Eventually(t, 30*time.Second, "counter gone from the API server", func() bool {
		err := e.cp.Client.Get(ctx, client.ObjectKeyFromObject(dev), &devicesv1alpha2.Device{})
		return apierrors.IsNotFound(err)
	})
	// The edge, still offline, keeps serving the device.
	e.publish(t, "$hw/events/device/counter/twin/get", `{"event_id":"offline"}`)
	if p := e.waitMessage(t, "$hw/events/device/counter/twin/get/result", contains(`"offline"`)); !contains(`"twin"`)(p) {
		t.Fatalf("offline twin/get = %s, want the twin", p)
	}

	e.cloud = framework.StartCloud(t, e.cloud.Config)

	// Apps learn of the removal as from a membership update.
	e.waitMessage(t, "$hw/events/node/"+node+"/membership/updated", func(p string) bool {
		var mu twin.MembershipUpdate
		return json.Unmarshal([]byte(p), &mu) == nil && len(mu.RemovedDevices) == 1 && mu.RemovedDevices[0].ID == "counter"
	})
	framework.Eventually(t, 30*time.Second, "counter gone from the edge database", func() bool { return counterRows() == 0 })
	for _, table := range []string{"device_twin", "device_attr"} {
		var n int
		if err := db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM %s WHERE deviceid = 'counter'`, table)).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s rows of counter = %d (%v), want 0", table, n, err)
		}
	}
	e.publish(t, "$hw/events/device/counter/twin/get", `{"event_id":"after"}`)
	p := e.waitMessage(t, "$hw/events/device/counter/twin/get/result", contains(`"after"`))
	var res struct {
		Code int `json:"code"`
	}
	if err := json.Unmarshal([]byte(p), &res); err != nil || res.Code != 404 {
		t.Errorf("twin/get after reconnect = %s (%v), want code 404", p, err)
	}
}
