package metamanager_test

import (
	"errors"
	"testing"

	"github.com/tether-edge/tether/edge/metamanager/store"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
	"github.com/tether-edge/tether/pkg/sqlitedb/sqlitedbtest"
)

// TestAckedObjectSurvivesPowerLoss: once MetaManager ACKs an object, the cloud records it as delivered and never
// sends it again until it changes, so the commit before the ACK must survive a power loss.
//
// Two checks at the moment each ACK is seen:
//   - What survives a power loss is what is on stable storage, i.e. the files minus their dirty page-cache pages.
//     The database and its -wal must have no dirty page (sqlitedbtest.DirtyPages, where the kernel tells; this is
//     the check that fails under WAL with synchronous=NORMAL, whose commits are only written, not fsynced).
//   - A copy of the database files taken then, opened fresh as after a reboot, holds the row. A copy reads the
//     page cache, dirty pages included, so on its own it would pass with NORMAL too: it proves the commit is in
//     the files and recoverable from the db and -wal alone (no -shm), not that it is on disk. That it is on
//     disk is the first check, and that every connection runs with synchronous=FULL is
//     sqlitedb.TestEveryConnectionIsDurable.
func TestAckedObjectSurvivesPowerLoss(t *testing.T) {
	tests := []struct {
		name    string
		op      string
		rv      string
		present bool
	}{
		{name: "insert", op: model.InsertOperation, rv: "5", present: true},
		{name: "update", op: model.UpdateOperation, rv: "6", present: true},
		{name: "delete", op: model.DeleteOperation, rv: "6", present: false},
		{name: "insert again", op: model.InsertOperation, rv: "7", present: true},
	}
	h := newHarness(t, harnessOpts{})
	const key = "default/pod/web"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			content := podJSON("web", "u1", tc.rv)
			msg := h.fromCloud(modules.EdgeController, tc.op, key, content)
			ack := next(t, h.hub.got, "hub")
			if ack.Header.ParentID != msg.Header.ID {
				t.Fatalf("hub got %s, want the ACK of %s", ack.String(), msg.String())
			}
			// Nothing is written between the ACK and this point: MetaManager handles one message at a time and
			// this is the only one.
			path := h.store.Path()
			for _, f := range []string{path, path + "-wal"} {
				dirty, total, err := sqlitedbtest.DirtyPages(f)
				switch {
				case errors.Is(err, sqlitedbtest.ErrUnsupported):
					t.Logf("not checking the page cache: %v", err)
				case err != nil:
					t.Fatal(err)
				case dirty > 0:
					t.Errorf("%s: %d of %d pages not on disk when the ACK left", f, dirty, total)
				}
			}
			snapshot, err := sqlitedbtest.CopyFiles(path, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			after, err := store.Open(h.ctx, snapshot)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = after.Close() }()
			row, err := after.Get(h.ctx, key)
			switch {
			case tc.present && (err != nil || row.Value != string(content)):
				t.Errorf("after the power loss row = %+v, %v; want %s", row, err, content)
			case !tc.present && !errors.Is(err, store.ErrNotFound):
				t.Errorf("after the power loss row = %+v, %v; want it deleted", row, err)
			}
			next(t, h.edged.got, "edged")
		})
	}
}
