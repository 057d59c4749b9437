package main

// What the test node runs for a container image, and the environment it
// gives the process (env, envFrom, the downward API, $(VAR) expansion), as
// the kubelet computes it.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// testappRepository is the image repository that always means the test app;
// so does any repository whose last path component is "podinfo".
const testappRepository = "serin.dev/testapp"

// imageFlags collects --image REPOSITORY=BINARY.
type imageFlags map[string]string

func (f *imageFlags) String() string { return fmt.Sprint(map[string]string(*f)) }

func (f *imageFlags) Set(v string) error {
	repo, bin, ok := strings.Cut(v, "=")
	if !ok || repo == "" || bin == "" {
		return fmt.Errorf("want REPOSITORY=BINARY, got %q", v)
	}
	if *f == nil {
		*f = imageFlags{}
	}
	(*f)[repo] = bin
	return nil
}

type imageTable struct {
	testapp string            // may be empty: podinfo images then cannot run
	others  map[string]string // repository -> binary
}

func newImageTable(testapp string, others imageFlags) (imageTable, error) {
	t := imageTable{others: map[string]string{}}
	check := func(what, path string) (string, error) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", err
		}
		st, err := os.Stat(abs)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s: %s is not an executable file", what, abs)
		}
		return abs, nil
	}
	if testapp != "" {
		abs, err := check("--testapp", testapp)
		if err != nil {
			return t, err
		}
		t.testapp = abs
	}
	for repo, bin := range others {
		abs, err := check("--image "+repo, bin)
		if err != nil {
			return t, err
		}
		t.others[repo] = abs
	}
	return t, nil
}

// splitImage returns an image reference's repository and tag ("latest" when
// it has none; the digest, if any, is dropped).
func splitImage(image string) (repo, tag string) {
	image, _, _ = strings.Cut(image, "@")
	slash := strings.LastIndex(image, "/")
	if colon := strings.LastIndex(image, ":"); colon > slash {
		return image[:colon], image[colon+1:]
	}
	return image, "latest"
}

func isTestapp(repo string) bool {
	if repo == testappRepository {
		return true
	}
	last := repo[strings.LastIndex(repo, "/")+1:]
	return last == "podinfo"
}

// launch is how one container is started.
type launch struct {
	binary string
	args   []string
}

// errImage is an image the node cannot run: the Pod shows ErrImagePull.
type errImage struct{ msg string }

func (e errImage) Error() string { return e.msg }

// launchFor decides the process for a container: the test app (with the
// image tag as its version, bound to the Pod address and the container's
// ports) or a binary registered with --image (given the container's
// command[1:] and args).
func (t imageTable) launchFor(c *corev1.Container, podName, podIP string) (launch, error) {
	repo, tag := splitImage(c.Image)
	if isTestapp(repo) {
		if t.testapp == "" {
			return launch{}, errImage{fmt.Sprintf("image %q: the test node was started without --testapp, so it cannot run podinfo images", c.Image)}
		}
		args := []string{"--host", podIP, "--hostname", podName, "--version", tag}
		for _, p := range containerTCPPorts(c) {
			args = append(args, "--port", strconv.Itoa(p))
		}
		return launch{binary: t.testapp, args: args}, nil
	}
	if bin, ok := t.others[repo]; ok {
		var args []string
		if len(c.Command) > 1 {
			args = append(args, c.Command[1:]...)
		}
		args = append(args, c.Args...)
		return launch{binary: bin, args: args}, nil
	}
	known := []string{"*/podinfo", testappRepository}
	for repo := range t.others {
		known = append(known, repo)
	}
	sort.Strings(known)
	return launch{}, errImage{fmt.Sprintf("image %q: repository %q is not one the serin test node can run (it runs %s as local processes)", c.Image, repo, strings.Join(known, ", "))}
}

var portArg = regexp.MustCompile(`^--port(?:-metrics)?=(\d+)$`)

// containerTCPPorts: the container's declared TCP ports, then any
// --port=N / --port-metrics=N in its command line (podinfo's flags), in order,
// without duplicates.
func containerTCPPorts(c *corev1.Container) []int {
	var ports []int
	seen := map[int]bool{}
	add := func(p int) {
		if p > 0 && p < 65536 && !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	for _, p := range c.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			add(int(p.ContainerPort))
		}
	}
	words := append(append([]string{}, c.Command...), c.Args...)
	for i, w := range words {
		if m := portArg.FindStringSubmatch(w); m != nil {
			p, _ := strconv.Atoi(m[1])
			add(p)
		} else if (w == "--port" || w == "--port-metrics") && i+1 < len(words) {
			if p, err := strconv.Atoi(words[i+1]); err == nil {
				add(p)
			}
		}
	}
	return ports
}

// errConfig is a container whose environment cannot be built: the Pod shows
// CreateContainerConfigError, as with the kubelet.
type errConfig struct{ msg string }

func (e errConfig) Error() string { return e.msg }

// containerEnv builds a container's environment as the kubelet does: envFrom
// first, then env in order, each value with $(VAR) references to earlier
// variables expanded.
func containerEnv(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, c *corev1.Container, podIP, hostIP string) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	configMaps := map[string]*corev1.ConfigMap{}
	secrets := map[string]*corev1.Secret{}
	getConfigMap := func(name string) (*corev1.ConfigMap, error) {
		if cm, ok := configMaps[name]; ok {
			return cm, nil
		}
		cm, err := client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		configMaps[name] = cm
		return cm, nil
	}
	getSecret := func(name string) (*corev1.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		s, err := client.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		secrets[name] = s
		return s, nil
	}
	optional := func(o *bool) bool { return o != nil && *o }

	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := getConfigMap(from.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, errConfig{fmt.Sprintf("configmap %q not found", from.ConfigMapRef.Name)}
			}
			for _, k := range sortedKeys(cm.Data) {
				set(from.Prefix+k, cm.Data[k])
			}
		case from.SecretRef != nil:
			s, err := getSecret(from.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(from.SecretRef.Optional) {
					continue
				}
				return nil, errConfig{fmt.Sprintf("secret %q not found", from.SecretRef.Name)}
			}
			keys := make([]string, 0, len(s.Data))
			for k := range s.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				set(from.Prefix+k, string(s.Data[k]))
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, vars))
			continue
		}
		src := e.ValueFrom
		switch {
		case src.FieldRef != nil:
			v, err := podField(pod, src.FieldRef.FieldPath, podIP, hostIP)
			if err != nil {
				return nil, errConfig{fmt.Sprintf("env %s: %v", e.Name, err)}
			}
			set(e.Name, v)
		case src.ResourceFieldRef != nil:
			v, err := resourceField(c, src.ResourceFieldRef)
			if err != nil {
				return nil, errConfig{fmt.Sprintf("env %s: %v", e.Name, err)}
			}
			set(e.Name, v)
		case src.ConfigMapKeyRef != nil:
			ref := src.ConfigMapKeyRef
			cm, err := getConfigMap(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(ref.Optional) {
					continue
				}
				return nil, errConfig{fmt.Sprintf("configmap %q not found", ref.Name)}
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, errConfig{fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)}
			}
			set(e.Name, v)
		case src.SecretKeyRef != nil:
			ref := src.SecretKeyRef
			s, err := getSecret(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(ref.Optional) {
					continue
				}
				return nil, errConfig{fmt.Sprintf("secret %q not found", ref.Name)}
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, errConfig{fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)}
			}
			set(e.Name, string(v))
		}
	}
	env := make([]string, 0, len(order)+2)
	if _, ok := vars["HOSTNAME"]; !ok {
		env = append(env, "HOSTNAME="+pod.Name)
	}
	if _, ok := vars["PATH"]; !ok {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expandVars replaces $(NAME) with an earlier variable's value; $$ is a
// literal $; an unknown reference stays as written (Kubernetes' rules).
func expandVars(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

var subscript = regexp.MustCompile(`^metadata\.(labels|annotations)\['([^']+)'\]$`)

func podField(pod *corev1.Pod, path, podIP, hostIP string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	}
	if m := subscript.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return pod.Labels[m[2]], nil
		}
		return pod.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q", path)
}

// resourceField: the container's limit (or request) in units of the
// divisor; a missing limit is the node's allocatable, as the kubelet does.
func resourceField(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("unsupported resource %q", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		switch name {
		case "cpu":
			q = resource.MustParse("32")
		case "memory":
			q = resource.MustParse("64Gi")
		case "ephemeral-storage":
			q = resource.MustParse("100Gi")
		default:
			return "", fmt.Errorf("unsupported resource %q", ref.Resource)
		}
		if kind == "requests" {
			q = resource.MustParse("0")
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if name == "cpu" {
		// Rounded up, at least 1 for a non-zero value, like the kubelet.
		v := (q.MilliValue() + divisor.MilliValue() - 1) / divisor.MilliValue()
		return strconv.FormatInt(v, 10), nil
	}
	v := (q.Value() + divisor.Value() - 1) / divisor.Value()
	return strconv.FormatInt(v, 10), nil
}
