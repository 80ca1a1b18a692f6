//go:build integration

package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	devicesv1alpha2 "github.com/tether-edge/tether/pkg/apis/devices/v1alpha2"
	reliablesyncsv1alpha1 "github.com/tether-edge/tether/pkg/apis/reliablesyncs/v1alpha1"
	"github.com/tether-edge/tether/tests/framework"
)

// The tutorial's YAML, applied unchanged with a real kubectl, must read back through our typed client with the
// twins it set at create time.
func TestCounterTutorialObjectsApplyUnchanged(t *testing.T) {
	cp := framework.StartControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	crds := filepath.Join(framework.RepoRoot(), "examples", "counter-demo", "crds")
	for _, f := range []string{"kubeedge-counter-model.yaml", "kubeedge-counter-instance.yaml"} {
		// The first create after CRD install can race API discovery; retry briefly.
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			out, err := cp.Kubectl(ctx, "create", "-f", filepath.Join(crds, f))
			if err != nil {
				t.Logf("kubectl create -f %s: %v", f, err)
				return false, nil
			}
			t.Logf("%s", strings.TrimSpace(out))
			return true, nil
		})
		if err != nil {
			t.Fatalf("kubectl create -f %s never succeeded: %v", f, err)
		}
	}

	var model devicesv1alpha2.DeviceModel
	if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "counter-model"}, &model); err != nil {
		t.Fatalf("get device model: %v", err)
	}
	if len(model.Spec.Properties) != 1 || model.Spec.Properties[0].Type.String == nil ||
		model.Spec.Properties[0].Type.String.AccessMode != devicesv1alpha2.ReadWrite {
		t.Errorf("counter-model properties = %+v, want one ReadWrite string property", model.Spec.Properties)
	}

	var dev devicesv1alpha2.Device
	if err := cp.Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "counter"}, &dev); err != nil {
		t.Fatalf("get device: %v", err)
	}
	if len(dev.Status.Twins) == 0 {
		t.Fatalf("device counter has no twins; status = %+v", dev.Status)
	}
	if got := dev.Status.Twins[0].Desired.Value; got != "OFF" {
		t.Errorf("status.twins[0].desired.value = %q, want OFF", got)
	}
	if got := dev.Status.Twins[0].Reported.Value; got != "0" {
		t.Errorf("status.twins[0].reported.value = %q, want 0", got)
	}
	if dev.Spec.DeviceModelRef == nil || dev.Spec.DeviceModelRef.Name != "counter-model" {
		t.Errorf("spec.deviceModelRef = %+v, want counter-model", dev.Spec.DeviceModelRef)
	}
	sel := dev.Spec.NodeSelector
	if sel == nil || len(sel.NodeSelectorTerms) != 1 || sel.NodeSelectorTerms[0].MatchExpressions[0].Operator != corev1.NodeSelectorOpIn ||
		sel.NodeSelectorTerms[0].MatchExpressions[0].Values[0] != "edge1" {
		t.Errorf("spec.nodeSelector = %+v, want one In term for edge1", sel)
	}
	if got := dev.Labels["description"]; got != "counter" {
		t.Errorf("label description = %q, want counter", got)
	}

	// Desired and reported are written by different owners through the main endpoint; a merge patch of the
	// whole object must keep working (the tutorial's web app does this).
	patch := client.MergeFrom(dev.DeepCopy())
	dev.Status.Twins[0].Desired.Value = "ON"
	if err := cp.Client.Patch(ctx, &dev, patch); err != nil {
		t.Fatalf("patch desired: %v", err)
	}
	out, err := cp.Kubectl(ctx, "get", "device", "counter", "-o", "jsonpath={.status.twins[0].desired.value}")
	if err != nil || out != "ON" {
		t.Errorf("kubectl get desired after patch = %q, %v; want ON", out, err)
	}
}

// A Device missing required fields is refused by the API server with a clear reason, not stored half-valid.
func TestDeviceSchemaRejectsBadObjects(t *testing.T) {
	cp := framework.StartControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"missing nodeSelector", `apiVersion: devices.kubeedge.io/v1alpha2
kind: Device
metadata: {name: bad1, namespace: default}
spec: {deviceModelRef: {name: m}}`, "spec.nodeSelector: Required value"},
		{"two property types", `apiVersion: devices.kubeedge.io/v1alpha2
kind: DeviceModel
metadata: {name: bad2, namespace: default}
spec: {properties: [{name: p, type: {int: {accessMode: ReadWrite}, string: {accessMode: ReadWrite}}}]}`, "spec.properties[0].type"},
		{"bad access mode", `apiVersion: devices.kubeedge.io/v1alpha2
kind: DeviceModel
metadata: {name: bad3, namespace: default}
spec: {properties: [{name: p, type: {string: {accessMode: WriteOnly}}}]}`, "Unsupported value: \"WriteOnly\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "bad.yaml")
			writeFile(t, f, tt.yaml)
			_, err := cp.Kubectl(ctx, "create", "-f", f)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("kubectl create = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

// ObjectSync records are written by CloudHub: create, then status through the status subresource.
func TestObjectSyncStatusSubresource(t *testing.T) {
	cp := framework.StartControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	os := &reliablesyncsv1alpha1.ObjectSync{}
	os.Name = reliablesyncsv1alpha1.SyncName("edge1", "0b5e-uid")
	os.Namespace = "default"
	os.Spec = reliablesyncsv1alpha1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Pod", ObjectName: "nginx"}
	if err := cp.Client.Create(ctx, os); err != nil {
		t.Fatalf("create object sync: %v", err)
	}
	os.Status.ObjectResourceVersion = "42"
	if err := cp.Client.Status().Update(ctx, os); err != nil {
		t.Fatalf("update object sync status: %v", err)
	}
	var got reliablesyncsv1alpha1.ObjectSync
	if err := cp.Client.Get(ctx, client.ObjectKeyFromObject(os), &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.ObjectResourceVersion != "42" || got.Spec.ObjectKind != "Pod" {
		t.Errorf("object sync = %+v", got)
	}

	cos := &reliablesyncsv1alpha1.ClusterObjectSync{}
	cos.Name = reliablesyncsv1alpha1.SyncName("edge1", "node-uid")
	cos.Spec = reliablesyncsv1alpha1.ObjectSyncSpec{ObjectAPIVersion: "v1", ObjectKind: "Node", ObjectName: "edge1"}
	if err := cp.Client.Create(ctx, cos); err != nil {
		t.Fatalf("create cluster object sync: %v", err)
	}
}
