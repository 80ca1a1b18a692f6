package v1alpha2

import "testing"

// seccompDefault was accepted and ignored; it is a setting now, in both places KubeEdge has it, and off unless
// turned on, as with the kubelet.
func TestSeccompDefault(t *testing.T) {
	const head = "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\n"
	tests := []struct {
		name               string
		yaml               string
		wantFlag, wantConf bool
	}{
		{name: "default", yaml: head},
		{name: "tailored-kubelet-config", yaml: head + "modules: {edged: {tailoredKubeletConfig: {seccompDefault: true}}}", wantConf: true},
		{name: "edged-flag", yaml: head + "modules: {edged: {seccompDefault: true}}", wantFlag: true},
		{name: "explicit-false", yaml: head + "modules: {edged: {seccompDefault: false, tailoredKubeletConfig: {seccompDefault: false}}}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(writeConfig(t, tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			e := c.Modules.Edged
			if e.SeccompDefault != tc.wantFlag || e.TailoredKubeletConfig.SeccompDefault != tc.wantConf {
				t.Errorf("seccompDefault = %v, tailoredKubeletConfig.seccompDefault = %v; want %v, %v",
					e.SeccompDefault, e.TailoredKubeletConfig.SeccompDefault, tc.wantFlag, tc.wantConf)
			}
		})
	}
	c, err := Load("testdata/kubeedge-edgecore.yaml")
	if err != nil || c.Modules.Edged.TailoredKubeletConfig.SeccompDefault {
		t.Fatalf("KubeEdge's sample config (seccompDefault: false): %v, %v", err, c.Modules.Edged.TailoredKubeletConfig.SeccompDefault)
	}
	if NewDefaultEdgeCore().Modules.Edged.TailoredKubeletConfig.SeccompDefault {
		t.Error("seccompDefault is on by default; the kubelet's default is off")
	}
}
