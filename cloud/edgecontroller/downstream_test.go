package edgecontroller

import (
	"encoding/json"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

const podRes = "node/edge-1/default/pod/web"

func TestPodAndReferencesDownstream(t *testing.T) {
	refs := []runtime.Object{
		configMap("cm-a", "11"), configMap("cm-b", "12"), secret("sec-a", "13"), secret("sec-b", "14"),
		configMap("unused", "15"), secret("unused-secret", "16"),
	}
	tests := []struct {
		name        string
		nodeName    string
		nodeLabels  map[string]string // nil: not an edge node
		opts        []podOpt
		wantSent    bool
		wantCMs     []string
		wantSecrets []string
	}{
		{name: "configmap volume", opts: []podOpt{withVolumeConfigMap("cm-a")}, wantSent: true, wantCMs: []string{"cm-a"}},
		{name: "secret volume", opts: []podOpt{withVolumeSecret("sec-a")}, wantSent: true, wantSecrets: []string{"sec-a"}},
		{name: "projected volume", opts: []podOpt{withProjected("cm-b", "sec-b")}, wantSent: true,
			wantCMs: []string{"cm-b"}, wantSecrets: []string{"sec-b"}},
		{name: "envFrom", opts: []podOpt{withEnvFromConfigMap("cm-a"), withEnvFromSecret("sec-a")}, wantSent: true,
			wantCMs: []string{"cm-a"}, wantSecrets: []string{"sec-a"}},
		{name: "env valueFrom in init container and container", opts: []podOpt{withEnvConfigMapKey("cm-b"), withEnvSecretKey("sec-b")},
			wantSent: true, wantCMs: []string{"cm-b"}, wantSecrets: []string{"sec-b"}},
		{name: "image pull secret", opts: []podOpt{withPullSecret("sec-a")}, wantSent: true, wantSecrets: []string{"sec-a"}},
		{name: "missing reference is skipped", opts: []podOpt{withVolumeConfigMap("nope"), withVolumeConfigMap("cm-a")},
			wantSent: true, wantCMs: []string{"cm-a"}},
		{name: "edge label with a value", nodeLabels: map[string]string{EdgeRoleLabel: "true"},
			opts: []podOpt{withVolumeConfigMap("cm-a")}, wantSent: true, wantCMs: []string{"cm-a"}},
		{name: "non-edge node", nodeName: "cloud-1", opts: []podOpt{withVolumeConfigMap("cm-a"), withVolumeSecret("sec-a")}},
		{name: "unbound pod", nodeName: "-", opts: []podOpt{withVolumeConfigMap("cm-a")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs := append(barrierObjects(), refs...)
			nodeName := "edge-2"
			switch tt.nodeName {
			case "cloud-1":
				nodeName = "cloud-1"
				objs = append(objs, node("cloud-1", "2"))
			case "-":
				nodeName = ""
			default:
				n := edgeNode("edge-2", "2")
				if tt.nodeLabels != nil {
					n.Labels = tt.nodeLabels
				}
				objs = append(objs, n)
			}
			objs = append(objs, pod("web", nodeName, "7", tt.opts...))
			h := start(t, objs...)
			h.barrier()

			res := "node/edge-2/default/pod/web"
			if nodeName != "edge-2" {
				for _, r := range []string{"node/cloud-1/default/pod/web", "node/edge-1/default/pod/web"} {
					if n := h.count(r, ""); n != 0 {
						t.Errorf("%d messages for %s, want none", n, r)
					}
				}
				for _, r := range []string{"node/cloud-1/default/configmap/cm-a", "node/cloud-1/default/secret/sec-a", "node/cloud-1/null/node/cloud-1"} {
					if n := h.count(r, ""); n != 0 {
						t.Errorf("%d messages for %s, want none", n, r)
					}
				}
				return
			}
			i := h.find(res, model.InsertOperation)
			if i < 0 {
				t.Fatalf("no pod insert for %s", res)
			}
			m := h.message(i)
			if m.Header.ResourceVersion != "7" || m.Router.Source != modules.EdgeController || m.Router.Group != model.GroupResource {
				t.Errorf("pod message header/route = %+v %+v", m.Header, m.Router)
			}
			var got corev1.Pod
			decodeContent(t, m, &got)
			if got.APIVersion != "v1" || got.Kind != "Pod" || got.Name != "web" || got.Spec.NodeName != "edge-2" {
				t.Errorf("pod content = %s", content(t, m))
			}
			for _, c := range []struct {
				typ, op string
				names   []string
			}{{"configmap", model.InsertOperation, tt.wantCMs}, {"secret", model.UpdateOperation, tt.wantSecrets}} {
				for _, name := range c.names {
					ri := h.find("node/edge-2/default/"+c.typ+"/"+name, c.op)
					if ri < 0 || ri > i {
						t.Errorf("%s %s: index %d, want sent with %s before the pod (index %d)", c.typ, name, ri, c.op, i)
						continue
					}
					if tm := typeMeta(t, h.message(ri)); tm.Kind == "" || tm.APIVersion != "v1" {
						t.Errorf("%s %s content lacks TypeMeta: %s", c.typ, name, content(t, h.message(ri)))
					}
				}
			}
			for _, r := range []string{"configmap/unused", "secret/unused-secret", "configmap/nope"} {
				if n := h.count("node/edge-2/default/"+r, ""); n != 0 {
					t.Errorf("%d messages for unreferenced %s", n, r)
				}
			}
			all := []string{"cm-a", "cm-b"}
			for _, name := range all {
				if !slices.Contains(tt.wantCMs, name) && h.count("node/edge-2/default/configmap/"+name, "") != 0 {
					t.Errorf("configmap %s sent but not referenced", name)
				}
			}
		})
	}
}

func TestPodLifecycle(t *testing.T) {
	h := start(t, append(barrierObjects(), edgeNode("edge-2", "2"), configMap("cm-a", "3"))...)
	pods := h.kube.CoreV1().Pods("default")

	p := pod("web", "edge-1", "10", withVolumeConfigMap("cm-a"))
	_, err := pods.Create(h.ctx, p, metav1.CreateOptions{})
	must(t, err)
	ins := h.expectMsg(podRes, model.InsertOperation, "10")
	cmIdx := h.find("node/edge-1/default/configmap/cm-a", "")
	if cmIdx < 0 || cmIdx > h.find(podRes, model.InsertOperation) {
		t.Errorf("configmap cm-a must be sent before the pod it is needed by")
	}
	if ins.Header.ID == "" {
		t.Error("message without id")
	}

	p.ResourceVersion = "11"
	p.Labels = map[string]string{"v": "2"}
	_, err = pods.Update(h.ctx, p, metav1.UpdateOptions{})
	must(t, err)
	h.expectMsg(podRes, model.UpdateOperation, "11")

	must(t, pods.Delete(h.ctx, "web", metav1.DeleteOptions{}))
	del := h.expectMsg(podRes, model.DeleteOperation, "11")
	var got corev1.Pod
	decodeContent(t, del, &got)
	if got.UID != "uid-web" || got.Kind != "Pod" {
		t.Errorf("delete content = %s, want the pod with its UID", content(t, del))
	}

	// Re-created under the same name on another node: the new node gets it, the old one was told to delete.
	p2 := pod("web", "edge-2", "20")
	p2.UID = "uid-web-2"
	_, err = pods.Create(h.ctx, p2, metav1.CreateOptions{})
	must(t, err)
	h.expectMsg("node/edge-2/default/pod/web", model.InsertOperation, "20")
	if n := h.count(podRes, model.InsertOperation); n != 1 {
		t.Errorf("edge-1 got %d inserts of web, want 1", n)
	}
}

func TestConfigMapAndSecretEvents(t *testing.T) {
	h := start(t, append(barrierObjects(),
		pod("web", "edge-1", "5", withVolumeConfigMap("cfg"), withVolumeSecret("sec")),
		node("cloud-1", "2"), pod("cloudpod", "cloud-1", "6", withVolumeConfigMap("cloudcfg")),
		configMap("cfg", "10"), secret("sec", "11"))...)
	h.barrier()
	cms, secrets := h.kube.CoreV1().ConfigMaps("default"), h.kube.CoreV1().Secrets("default")
	const cfgRes, secRes = "node/edge-1/default/configmap/cfg", "node/edge-1/default/secret/sec"

	_, err := cms.Update(h.ctx, configMap("cfg", "20"), metav1.UpdateOptions{})
	must(t, err)
	m := h.expectMsg(cfgRes, model.UpdateOperation, "20")
	var cm corev1.ConfigMap
	decodeContent(t, m, &cm)
	if cm.Kind != "ConfigMap" || cm.Data["k"] != "v" {
		t.Errorf("configmap content = %s", content(t, m))
	}

	// Secrets go as update, whether added or modified.
	must(t, secrets.Delete(h.ctx, "sec", metav1.DeleteOptions{}))
	h.expectMsg(secRes, model.DeleteOperation, "")
	_, err = secrets.Create(h.ctx, secret("sec", "21"), metav1.CreateOptions{})
	must(t, err)
	h.expectMsg(secRes, model.UpdateOperation, "21")
	if n := h.count(secRes, model.InsertOperation); n != 0 {
		t.Errorf("secret sent with insert %d times", n)
	}

	must(t, cms.Delete(h.ctx, "cfg", metav1.DeleteOptions{}))
	h.expectMsg(cfgRes, model.DeleteOperation, "")

	// Unreferenced, or referenced only from a non-edge node: never sent.
	_, err = cms.Create(h.ctx, configMap("lonely", "30"), metav1.CreateOptions{})
	must(t, err)
	_, err = cms.Create(h.ctx, configMap("cloudcfg", "31"), metav1.CreateOptions{})
	must(t, err)
	h.barrier()
	for _, r := range []string{"node/edge-1/default/configmap/lonely", "node/cloud-1/default/configmap/cloudcfg", "node/edge-1/default/configmap/cloudcfg"} {
		if n := h.count(r, ""); n != 0 {
			t.Errorf("%d messages for %s, want none", n, r)
		}
	}
}

func TestNodeEvents(t *testing.T) {
	h := start(t, append(barrierObjects(), node("cloud-1", "2"), edgeNode("edge-2", "3"),
		pod("onlater", "cloud-1", "4"))...)
	nodes := h.kube.CoreV1().Nodes()
	m := h.expectMsg("node/edge-2/null/node/edge-2", model.UpdateOperation, "3")
	if tm := typeMeta(t, m); tm.Kind != "Node" || tm.APIVersion != "v1" {
		t.Errorf("node content TypeMeta = %+v", tm)
	}

	n := edgeNode("edge-2", "30")
	n.Labels["x"] = "y"
	_, err := nodes.Update(h.ctx, n, metav1.UpdateOptions{})
	must(t, err)
	h.expectMsg("node/edge-2/null/node/edge-2", model.UpdateOperation, "30")

	must(t, nodes.Delete(h.ctx, "edge-2", metav1.DeleteOptions{}))
	del := h.expectMsg("node/edge-2/null/node/edge-2", model.DeleteOperation, "")
	if del.Content != nil {
		t.Errorf("node delete content = %v, want none", del.Content)
	}

	// A non-edge node is never sent; once labelled, it gets its Node and pods.
	c := node("cloud-1", "40")
	_, err = nodes.Update(h.ctx, c, metav1.UpdateOptions{})
	must(t, err)
	h.barrier()
	if n := h.count("node/cloud-1/null/node/cloud-1", ""); n != 0 {
		t.Errorf("%d messages for non-edge node", n)
	}
	c = edgeNode("cloud-1", "41")
	_, err = nodes.Update(h.ctx, c, metav1.UpdateOptions{})
	must(t, err)
	h.expectMsg("node/cloud-1/null/node/cloud-1", model.UpdateOperation, "41")
	h.expectMsg("node/cloud-1/default/pod/onlater", model.UpdateOperation, "4")
}

func TestConnectedResync(t *testing.T) {
	h := start(t, append(barrierObjects(), edgeNode("edge-2", "2"), configMap("cfg", "3"), secret("sec", "4"),
		pod("web", "edge-2", "5", withVolumeConfigMap("cfg"), withPullSecret("sec")))...)
	h.barrier()
	const (
		nodeRes = "node/edge-2/null/node/edge-2"
		cfgRes  = "node/edge-2/default/configmap/cfg"
		secRes  = "node/edge-2/default/secret/sec"
		webRes  = "node/edge-2/default/pod/web"
	)
	before := map[string]int{}
	for _, r := range []string{nodeRes, cfgRes, secRes, webRes} {
		before[r] = h.count(r, "")
		if before[r] == 0 {
			t.Fatalf("%s not sent initially", r)
		}
	}

	connected := func(node, op string) {
		msg := model.NewMessage("").BuildRouter(modules.CloudHub, model.GroupResource, "node/"+node, op).
			FillBody(json.RawMessage(`{"event_type":"` + op + `","timestamp":1,"client_id":"` + node + `"}`))
		must(t, h.bus.SendToGroup(h.ctx, modules.EdgeController, *msg))
	}
	connected("edge-2", model.DisconnectedOperation)
	connected("edge-2", model.ConnectedOperation)
	connected("nobody", model.ConnectedOperation) // unknown node: nothing to send, no failure

	h.waitFor("resent pod", func(model.Message) bool { return h.count(webRes, "") > before[webRes] })
	for _, r := range []string{nodeRes, cfgRes, secRes} {
		if h.count(r, "") <= before[r] {
			t.Errorf("%s not resent on connect", r)
		}
	}
	// Dependencies first: the resent pod follows its ConfigMap and Secret.
	msgs, _ := h.rec.snapshot()
	last := func(res string) int {
		idx := -1
		for i, m := range msgs {
			if m.Router.Resource == res {
				idx = i
			}
		}
		return idx
	}
	if !(last(cfgRes) < last(webRes) && last(secRes) < last(webRes)) {
		t.Errorf("resync order wrong:\n%s", describe(msgs))
	}
	if n := h.count("node/nobody/null/node/nobody", ""); n != 0 {
		t.Errorf("sent %d messages for an unknown node", n)
	}
}
