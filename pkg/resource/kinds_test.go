package resource

import "testing"

func TestKindTypeRoundTrip(t *testing.T) {
	for typ := range syncedKinds {
		gvk, ok := KindForType(typ)
		if !ok {
			t.Fatalf("KindForType(%q) not found", typ)
		}
		back, ok := TypeForKind(gvk.Kind)
		if !ok || back != typ {
			t.Errorf("TypeForKind(%q) = %q, %v; want %q", gvk.Kind, back, ok, typ)
		}
	}
	if _, ok := KindForType("podlist"); ok {
		t.Error("podlist is not a synced kind")
	}
	if _, ok := TypeForKind("Lease"); ok {
		t.Error("Lease is not a synced kind")
	}
}
