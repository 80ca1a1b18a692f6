package kuberuntime

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// admissionError is the kubelet's pod admission for what the runtime layer can judge (AppArmor): a pod that has
// not started yet and that this node cannot run as asked is rejected for good, before anything is created.
// Pods that already run here (adopted after an edgecore restart) are not judged again, as with the kubelet.
// It returns the reason and the error to show, or "" and nil.
func (m *Manager) admissionError(pod *corev1.Pod, rt *podRuntime) (string, error) {
	if (pod.Status.Phase != "" && pod.Status.Phase != corev1.PodPending) || len(rt.sandboxes) > 0 || len(rt.containers) > 0 {
		return "", nil
	}
	if err := m.admitAppArmor(pod); err != nil {
		return ReasonAppArmor, err
	}
	return "", nil
}

// rejectedStatus is the final status of a pod refused by admission: Failed, with the kubelet's reason and
// "Pod was rejected: " message. Being terminal, the pod is never started afterwards.
func (m *Manager) rejectedStatus(pod *corev1.Pod, rt *podRuntime, rtName, reason string, err error) corev1.PodStatus {
	failed := pod.DeepCopy()
	failed.Status.Phase = corev1.PodFailed
	st := m.buildStatus(failed, rt, nil, rtName)
	st.Reason, st.Message = reason, "Pod was rejected: "+err.Error()
	klog.InfoS("Pod rejected", "pod", klog.KObj(pod), "reason", reason, "message", st.Message)
	return st
}
