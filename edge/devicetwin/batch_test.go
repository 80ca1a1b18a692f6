package devicetwin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pkg/beehive"
)

// gate holds the first commit of reports until released, so the test can queue more behind it, as a mapper's
// reports queue while a commit waits for the disk.
type gate struct {
	sizes   chan int
	release chan struct{}
}

func newGate() *gate { return &gate{sizes: make(chan int, 64), release: make(chan struct{})} }

func (g *gate) hook(d *DeviceTwin) {
	first := true
	d.committed = func(n int) {
		g.sizes <- n
		if first {
			first = false
			<-g.release
		}
	}
}

func (g *gate) next(t *testing.T) int {
	t.Helper()
	select {
	case n := <-g.sizes:
		return n
	case <-time.After(waitTimeout):
		t.Fatal("no commit of reports")
		return 0
	}
}

func countReport(eventID, v string) string {
	return `{"event_id":"` + eventID + `","timestamp":0,"twin":{"count":{"actual":{"value":"` + v + `"},"metadata":{"type":"int"}}}}`
}

// answer is the next publish on topic (documents and deltas of other topics are skipped).
func (h *harness) answer(topic string) map[string]any {
	h.t.Helper()
	for {
		select {
		case msg := <-h.eventbus.got:
			if msg.Router.Resource != topic {
				continue
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(msg.Content.(string)), &v); err != nil {
				h.t.Fatal(err)
			}
			return v
		case <-time.After(waitTimeout):
			h.t.Fatalf("nothing published on %s", topic)
		}
	}
}

// Reports that queue up while a commit is under way share the next commit (at most maxBatch each), and each
// mapper still gets its answer, in order, only once its report is committed.
func TestReportsQueuedDuringACommitShareTheNext(t *testing.T) {
	g := newGate()
	h := withCounter(t, "", g.hook)
	const n = 100
	h.mqtt(counterTopic+"/twin/update", countReport("r0", "0"))
	if got := g.next(t); got != 1 {
		t.Fatalf("first commit carries %d reports, want 1", got)
	}
	for i := 1; i < n; i++ {
		h.mqtt(counterTopic+"/twin/update", countReport(fmt.Sprintf("r%d", i), fmt.Sprint(i)))
	}
	// Handled after the reports: it must see them all, and come after their answers.
	h.mqtt(counterTopic+"/twin/get", `{"event_id":"get"}`)
	close(g.release)
	var sizes []int
	for total := 1; total < n; {
		s := g.next(t)
		sizes = append(sizes, s)
		total += s
	}
	if !slices.Equal(sizes, []int{maxBatch, n - 1 - maxBatch}) {
		t.Errorf("commits after the first carry %v reports, want [%d %d]", sizes, maxBatch, n-1-maxBatch)
	}
	for i := range n {
		res := h.answer(counterTopic + "/twin/update/result")
		if res["event_id"] != fmt.Sprintf("r%d", i) || res["code"] != nil {
			t.Fatalf("answer %d = %v", i, res)
		}
	}
	get := h.answer(counterTopic + "/twin/get/result")
	if v := get["twin"].(map[string]any)["count"].(map[string]any)["actual"].(map[string]any)["value"]; v != fmt.Sprint(n-1) {
		t.Errorf("twin/get after the burst: count = %v, want %d", v, n-1)
	}
	if got := h.query(`SELECT actual FROM device_twin WHERE name = 'count'`); len(got) != 1 || got[0][0] != fmt.Sprint(n-1) {
		t.Errorf("stored count = %v", got)
	}
	if got := h.query(`SELECT payload FROM tether_twin_outbox WHERE prop = 'count'`); len(got) != 1 ||
		!strings.Contains(got[0][0].(string), `"`+fmt.Sprint(n-1)+`"`) {
		t.Errorf("report for the cloud = %v", got)
	}
}

// A report whose write fails is answered with an error and rolled back alone; the others of its batch are kept.
func TestFailedReportLeavesItsBatch(t *testing.T) {
	g := newGate()
	h := withCounter(t, "", g.hook)
	// The database refuses one value, as a full disk or a broken row would refuse a write.
	db, err := sql.Open("sqlite3", "file:"+h.dbPath+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.Exec(`CREATE TRIGGER refuse BEFORE UPDATE ON device_twin WHEN NEW.actual = '13'
		BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	h.mqtt(counterTopic+"/twin/update", countReport("r0", "0"))
	g.next(t)
	for i, v := range []string{"12", "13", "14"} {
		h.mqtt(counterTopic+"/twin/update", countReport(fmt.Sprintf("r%d", i+1), v))
	}
	close(g.release)
	if got := g.next(t); got != 2 {
		t.Errorf("second commit carries %d reports, want 2 (12 and 14)", got)
	}
	for i, wantCode := range []any{nil, nil, float64(CodeInternal), nil} {
		res := h.answer(counterTopic + "/twin/update/result")
		if res["event_id"] != fmt.Sprintf("r%d", i) || res["code"] != wantCode {
			t.Errorf("answer %d = %v, want code %v", i, res, wantCode)
		}
	}
	if got := h.query(`SELECT actual FROM device_twin WHERE name = 'count'`); len(got) != 1 || got[0][0] != "14" {
		t.Errorf("stored count = %v, want 14", got)
	}
	// The refused value never reached the cache: the next get shows 14.
	h.mqtt(counterTopic+"/twin/get", `{"event_id":"get"}`)
	get := h.answer(counterTopic + "/twin/get/result")
	if v := get["twin"].(map[string]any)["count"].(map[string]any)["actual"].(map[string]any)["value"]; v != "14" {
		t.Errorf("count = %v, want 14", v)
	}
}

// A failed commit answers every report of the batch with an error, sends none of the held answers, and fails
// the module, which restarts and reloads what the database really holds.
func TestFailedCommitAnswersErrors(t *testing.T) {
	db, err := openDB(context.Background(), t.TempDir()+"/edgecore.db")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	r := &run{DeviceTwin: &DeviceTwin{bus: beehive.New(beehive.Options{})}, db: db, batching: true}
	if err := r.inBatch(context.Background(), func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO device (id) VALUES ('d')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var sent, failed []string
	r.deferred = append(r.deferred, func() { sent = append(sent, "answer") })
	r.failed = append(r.failed, func(err error) { failed = append(failed, err.Error()) })
	_ = r.batch.Rollback() // the commit will fail
	if err := r.commitBatch(); err == nil || !errors.Is(err, sql.ErrTxDone) {
		t.Fatalf("commitBatch = %v, want the commit's error", err)
	}
	if len(sent) != 0 || len(failed) != 1 || !strings.Contains(failed[0], "commit 1 twin reports") {
		t.Errorf("sent %v, failed %v", sent, failed)
	}
	if r.batch != nil || r.batched != 0 || r.deferred != nil {
		t.Error("batch state not reset")
	}
}
