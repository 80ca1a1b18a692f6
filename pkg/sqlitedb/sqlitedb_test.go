package sqlitedb

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
)

func TestStringSetPersists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "edgecore.db")
	s, err := OpenStringSet(ctx, path, "sub_topics", "topic", "subscription")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"b", "a", "b"} {
		if err := s.Add(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Remove(ctx, "missing"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStringSet(ctx, path, "sub_topics", "topic", "subscription")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.List(ctx)
	if err != nil || !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("List after reopen = %v, %v; want [a b]", got, err)
	}
	var journal string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&journal); err != nil || journal != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", journal, err)
	}
}

func TestNilStringSetKeepsNothing(t *testing.T) {
	s, err := OpenStringSet(context.Background(), "", "t", "c", "thing")
	if err != nil || s != nil {
		t.Fatalf("OpenStringSet with no path = %v, %v; want nil, nil", s, err)
	}
	ctx := context.Background()
	if err := s.Add(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.List(ctx); err != nil || got != nil {
		t.Fatalf("List = %v, %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
