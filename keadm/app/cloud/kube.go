package cloud

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-edge/tether/cloud/cloudhub/certificate"
)

// clients reach the API server named by one kubeconfig.
type clients struct {
	kube kubernetes.Interface
	ext  apiextensionsclient.Interface
	// host is the API server URL, for messages.
	host string
	// kubeconfig is the file the clients come from, for messages and for cloudcore.yaml.
	kubeconfig string
}

// newClientsFunc builds clients from a kubeconfig path; tests substitute fakes.
type newClientsFunc func(kubeconfig string) (*clients, error)

// defaultKubeConfig is kubectl's choice: the first file of $KUBECONFIG, else ~/.kube/config.
func defaultKubeConfig() string {
	if v := os.Getenv("KUBECONFIG"); v != "" {
		for _, p := range filepath.SplitList(v) {
			if p != "" {
				return p
			}
		}
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".kube", "config")
}

func loadClients(kubeconfig string) (*clients, error) {
	if kubeconfig == "" {
		kubeconfig = defaultKubeConfig()
	}
	if kubeconfig == "" {
		return nil, errors.New("no kubeconfig: pass --kube-config or set KUBECONFIG")
	}
	abs, err := filepath.Abs(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	if _, err := os.Stat(abs); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("kubeconfig %s does not exist: pass --kube-config with the API server's admin kubeconfig, or set KUBECONFIG", abs)
		}
		return nil, fmt.Errorf("kubeconfig %s: %w", abs, err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", abs)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s is unusable: %w", abs, err)
	}
	// keadm makes short requests and polls; a bound keeps a black-holed server from hanging it.
	rc.Timeout = 15 * time.Second
	rc.UserAgent = "keadm"
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", abs, err)
	}
	ext, err := apiextensionsclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", abs, err)
	}
	return &clients{kube: kube, ext: ext, host: rc.Host, kubeconfig: abs}, nil
}

// serverVersion is the reachability check; its error says what to fix.
func (c *clients) serverVersion(ctx context.Context) (string, error) {
	v, err := discovery.ToServerVersionInterfaceWithContext(c.kube.Discovery()).ServerVersionWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("API server %s (from kubeconfig %s) is unreachable: %s; check that it runs and that --kube-config points at it",
			c.host, c.kubeconfig, rootCause(err))
	}
	return v.GitVersion, nil
}

// rootCause drops client-go's "Get \"https://…/version?timeout=15s\":" prefix, which repeats the host.
func rootCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// access is one permission keadm init, and cloudcore with the same kubeconfig, cannot do without.
type access struct {
	verb, group, resource, namespace string
}

func (a access) String() string {
	s := a.verb + " " + a.resource
	if a.group != "" {
		s += "." + a.group
	}
	if a.namespace != "" {
		s += " in namespace " + a.namespace
	}
	return s
}

var requiredAccess = []access{
	{"create", "apiextensions.k8s.io", "customresourcedefinitions", ""},
	{"patch", "apiextensions.k8s.io", "customresourcedefinitions", ""},
	{"create", "", "namespaces", ""},
	{"create", "", "secrets", certificate.Namespace},
	{"get", "", "secrets", certificate.Namespace},
}

// checkAccess asks the API server, through SelfSubjectAccessReviews, whether the kubeconfig's user may do what
// init needs, so that a missing right fails before anything is changed rather than half-way.
func (c *clients) checkAccess(ctx context.Context) error {
	var denied []string
	for _, a := range requiredAccess {
		r, err := c.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Group: a.group, Resource: a.resource, Namespace: a.namespace,
			}},
		}, metav1.CreateOptions{})
		if apierrors.IsUnauthorized(err) {
			return fmt.Errorf("API server %s rejects the credentials in kubeconfig %s (Unauthorized): use a valid admin kubeconfig", c.host, c.kubeconfig)
		}
		if err != nil {
			return fmt.Errorf("checking permissions on API server %s: %w", c.host, err)
		}
		if !r.Status.Allowed {
			denied = append(denied, a.String())
		}
	}
	if len(denied) > 0 {
		return fmt.Errorf("the user of kubeconfig %s may not %s: use a cluster-admin kubeconfig (cloudcore runs with it too)",
			c.kubeconfig, strings.Join(denied, ", "))
	}
	return nil
}

// joinToken reads what `keadm gettoken` prints; "" without error means cloudcore has not published it yet.
func (c *clients) joinToken(ctx context.Context) (string, error) {
	s, err := c.kube.CoreV1().Secrets(certificate.Namespace).Get(ctx, certificate.TokenSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading Secret %s/%s from %s: %s", certificate.Namespace, certificate.TokenSecretName, c.host, rootCause(err))
	}
	return string(s.Data[certificate.TokenDataKey]), nil
}
