package devicetwin

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tether-edge/tether/pkg/sqlitedb/sqlitedbtest"
	"github.com/tether-edge/tether/pkg/twin"
)

// TestAnsweredReportSurvivesPowerLoss: once DeviceTwin answers a mapper's report, the report (twin row and the
// outbox entry that carries it to the cloud) must survive a power loss. See the MetaManager test of the same
// name for why a copy of the files alone proves nothing and the page cache is checked.
func TestAnsweredReportSurvivesPowerLoss(t *testing.T) {
	h := withCounter(t, "", nil)
	for _, v := range []string{"3", "4"} {
		h.mqtt(counterTopic+"/twin/update",
			`{"event_id":"","timestamp":0,"twin":{"status":{"actual":{"value":"`+v+`"},"metadata":{"type":"string"}}}}`)
		var res twin.DeviceTwinUpdate
		h.published(counterTopic+"/twin/update/result", &res)
		for _, f := range []string{h.dbPath, h.dbPath + "-wal"} {
			dirty, total, err := sqlitedbtest.DirtyPages(f)
			switch {
			case errors.Is(err, sqlitedbtest.ErrUnsupported):
				t.Logf("not checking the page cache: %v", err)
			case err != nil:
				t.Fatal(err)
			case dirty > 0:
				t.Errorf("%s: %d of %d pages not on disk when the answer left", f, dirty, total)
			}
		}
		snapshot, err := sqlitedbtest.CopyFiles(h.dbPath, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		after := &harness{t: t, dbPath: snapshot}
		if got := after.query(`SELECT actual FROM device_twin WHERE deviceid = 'counter' AND name = 'status'`); len(got) != 1 ||
			got[0][0] != v {
			t.Errorf("after the power loss status actual = %v; want %s", got, v)
		}
		if got := after.query(`SELECT payload FROM tether_twin_outbox WHERE device = 'counter' AND prop = 'status'`); len(got) != 1 ||
			!strings.Contains(fmt.Sprint(got[0][0]), `"`+v+`"`) {
			t.Errorf("after the power loss the report to the cloud = %v; want one with %s", got, v)
		}
		h.published(counterTopic+"/twin/update/document", &DeviceTwinDocument{})
		h.published(counterTopic+"/twin/update/delta", &DeviceTwinDelta{})
	}
}
