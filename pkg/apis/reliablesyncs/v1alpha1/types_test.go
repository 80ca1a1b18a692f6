package v1alpha1

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestSyncNameRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		wantN   string
		wantUID types.UID
		wantErr bool
	}{
		{name: SyncName("edge1", "6f1c-22"), wantN: "edge1", wantUID: "6f1c-22"},
		{name: SyncName("edge.example.com", "abc"), wantN: "edge.example.com", wantUID: "abc"},
		{name: "nodot", wantErr: true},
		{name: ".uid", wantErr: true},
		{name: "node.", wantErr: true},
		{name: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, uid, err := ParseSyncName(tt.name)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSyncName(%q) err = %v, wantErr %v", tt.name, err, tt.wantErr)
			}
			if n != tt.wantN || uid != tt.wantUID {
				t.Errorf("ParseSyncName(%q) = %q, %q; want %q, %q", tt.name, n, uid, tt.wantN, tt.wantUID)
			}
		})
	}
}
