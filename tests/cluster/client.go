package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	etcdversion "go.etcd.io/etcd/api/v3/version"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/component-base/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
)

func defaultKubeconfig() string {
	if v := os.Getenv("KUBECONFIG"); v != "" {
		return v
	}
	return ""
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return nil, errors.New("--kubeconfig (or KUBECONFIG) is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cfg.UserAgent = "serin-testcluster"
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	return cfg, nil
}

// waitReady polls /readyz until it answers "ok". The kubeconfig may not
// exist yet when it starts.
func waitReady(ctx context.Context, kubeconfig string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cfg, err := restConfig(kubeconfig)
		if err == nil {
			cfg.Timeout = 5 * time.Second
			var cs *kubernetes.Clientset
			if cs, err = kubernetes.NewForConfig(cfg); err == nil {
				var body []byte
				body, err = cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
				if err == nil && strings.TrimSpace(string(body)) == "ok" {
					return nil
				}
				if err == nil {
					err = fmt.Errorf("/readyz: %s", strings.TrimSpace(string(body)))
				}
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %v", timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func runReady(args []string) int {
	fs := flag.NewFlagSet("ready", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", defaultKubeconfig(), "kubeconfig of the cluster")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := waitReady(context.Background(), *kubeconfig, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "ready: %v\n", err)
		return 1
	}
	return 0
}

// ---- apply ----

type applier struct {
	dyn       dynamic.Interface
	mapper    *restmapper.DeferredDiscoveryRESTMapper
	namespace string
	manager   string
	timeout   time.Duration
	out       io.Writer
}

var crdGK = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}
var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// expandPaths turns directories into their *.yaml, *.yml and *.json files
// (sorted; kustomization files are not objects and are skipped).
func expandPaths(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		if p == "-" {
			out = append(out, p)
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		var files []string
		for _, e := range entries {
			n := e.Name()
			if e.IsDir() || strings.HasPrefix(n, "kustomization.") {
				continue
			}
			if strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") || strings.HasSuffix(n, ".json") {
				files = append(files, filepath.Join(p, n))
			}
		}
		sort.Strings(files)
		out = append(out, files...)
	}
	return out, nil
}

func readObjects(path string) ([]*unstructured.Unstructured, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(r), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]interface{}
		if err := dec.Decode(&m); err != nil {
			if err == io.EOF {
				return objs, nil
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			l, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			for i := range l.Items {
				objs = append(objs, &l.Items[i])
			}
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("%s: a document has no apiVersion/kind", path)
		}
		objs = append(objs, u)
	}
}

func describe(u *unstructured.Unstructured) string {
	gk := u.GroupVersionKind().GroupKind()
	s := strings.ToLower(gk.Kind)
	if gk.Group != "" {
		s += "." + gk.Group
	}
	s += "/" + u.GetName()
	if ns := u.GetNamespace(); ns != "" {
		s = ns + " " + s
	}
	return s
}

// retryable: errors that go away by themselves shortly after a CRD or a
// namespace was created, or while the server is busy.
func retryable(err error) bool {
	if meta.IsNoMatchError(err) {
		return true
	}
	if apierrors.IsNotFound(err) {
		var se apierrors.APIStatus
		if errors.As(err, &se) && se.Status().Details != nil && se.Status().Details.Kind == "namespaces" {
			return false
		}
		return true
	}
	return apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err) ||
		apierrors.IsInternalError(err) || apierrors.IsConflict(err)
}

func (a *applier) applyOne(ctx context.Context, u *unstructured.Unstructured) error {
	gvk := u.GroupVersionKind()
	if u.GetName() == "" {
		return fmt.Errorf("%s: metadata.name is required for server-side apply", gvk.Kind)
	}
	deadline := time.Now().Add(a.timeout)
	// An unknown kind or resource is retried for a short while only (a CRD
	// being installed by someone else); a typo should not cost a minute.
	unknownDeadline := time.Now().Add(min(a.timeout, 15*time.Second))
	for {
		err := a.tryApply(ctx, u)
		if err == nil {
			return nil
		}
		unknown := meta.IsNoMatchError(err) || apierrors.IsNotFound(err)
		if !retryable(err) || time.Now().After(deadline) || (unknown && time.Now().After(unknownDeadline)) {
			return fmt.Errorf("%s: %w", describe(u), err)
		}
		if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
			a.mapper.Reset()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (a *applier) tryApply(ctx context.Context, u *unstructured.Unstructured) error {
	gvk := u.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if u.GetNamespace() == "" {
			u.SetNamespace(a.namespace)
		}
		ri = a.dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
	} else {
		u.SetNamespace("")
		ri = a.dyn.Resource(mapping.Resource)
	}
	data, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	force := true
	_, err = ri.Patch(ctx, u.GetName(), types.ApplyPatchType, data,
		metav1.PatchOptions{FieldManager: a.manager, Force: &force})
	if err == nil {
		fmt.Fprintf(a.out, "%s serverside-applied\n", describe(u))
	}
	return err
}

// waitEstablished waits until every named CRD is Established.
func (a *applier) waitEstablished(ctx context.Context, names []string) error {
	deadline := time.Now().Add(a.timeout)
	for _, name := range names {
		for {
			crd, err := a.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err == nil {
				conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
				established := false
				for _, c := range conds {
					cm, _ := c.(map[string]interface{})
					if cm["type"] == "Established" && cm["status"] == "True" {
						established = true
					}
					if cm["type"] == "NamesAccepted" && cm["status"] == "False" {
						return fmt.Errorf("customresourcedefinition %s: names not accepted: %v", name, cm["message"])
					}
				}
				if established {
					break
				}
			} else if !retryable(err) {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("customresourcedefinition %s not Established after %s", name, a.timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(a.out, "%d customresourcedefinition(s) established\n", len(names))
	}
	return nil
}

func runApply(args []string) int {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", defaultKubeconfig(), "kubeconfig of the cluster")
	namespace := fs.String("namespace", "default", "namespace for namespaced objects that name none")
	fs.StringVar(namespace, "n", "default", "short for --namespace")
	manager := fs.String("field-manager", "serin-testcluster", "server-side apply field manager")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to retry an object / wait for a CRD")
	quiet := fs.Bool("q", false, "print nothing on success")
	if err := fs.Parse(reorderFlags(fs, args)); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: serin-testcluster apply --kubeconfig FILE [-n NS] FILE|DIR|-...")
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "apply: %v\n", err)
		return 1
	}
	paths, err := expandPaths(fs.Args())
	if err != nil {
		return fail(err)
	}
	var crds, namespaces, rest []*unstructured.Unstructured
	for _, p := range paths {
		objs, err := readObjects(p)
		if err != nil {
			return fail(err)
		}
		for _, o := range objs {
			switch gk := o.GroupVersionKind().GroupKind(); {
			case gk == crdGK:
				crds = append(crds, o)
			case gk.Group == "" && gk.Kind == "Namespace":
				namespaces = append(namespaces, o)
			default:
				rest = append(rest, o)
			}
		}
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		return fail(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fail(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fail(err)
	}
	a := &applier{
		dyn:       dyn,
		mapper:    restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		namespace: *namespace,
		manager:   *manager,
		timeout:   *timeout,
		out:       os.Stdout,
	}
	if *quiet {
		a.out = io.Discard
	}
	ctx := context.Background()
	var crdNames []string
	for _, o := range crds {
		if err := a.applyOne(ctx, o); err != nil {
			return fail(err)
		}
		crdNames = append(crdNames, o.GetName())
	}
	if err := a.waitEstablished(ctx, crdNames); err != nil {
		return fail(err)
	}
	if len(crdNames) > 0 {
		a.mapper.Reset()
	}
	for _, group := range [][]*unstructured.Unstructured{namespaces, rest} {
		for _, o := range group {
			if err := a.applyOne(ctx, o); err != nil {
				return fail(err)
			}
		}
	}
	return 0
}

// reorderFlags lets flags follow the file arguments (apply FILE --kubeconfig K).
func reorderFlags(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 < len(args) {
					flags = append(flags, args[i+1])
					i++
				}
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(append(flags, "--"), pos...)
}

// ---- kubectl ----

func runKubectl(args []string) int {
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(append([]string{"kubectl"}, args...))) // nolint:errcheck
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	cmd := kubectlcmd.NewDefaultKubectlCommandWithArgs(kubectlcmd.KubectlOptions{
		Arguments:   append([]string{"kubectl"}, args...),
		ConfigFlags: kubectlConfigFlags(streams),
		IOStreams:   streams,
	})
	cmd.SetArgs(args)
	if err := cli.RunNoErrOutput(cmd); err != nil {
		kubectlutil.CheckErr(err)
		return 1
	}
	return 0
}

// kubectlConfigFlags are kubectl's own defaults.
func kubectlConfigFlags(streams genericiooptions.IOStreams) *genericclioptions.ConfigFlags {
	return genericclioptions.NewConfigFlags(true).WithDeprecatedPasswordFlag().
		WithDiscoveryBurst(300).WithDiscoveryQPS(50.0).WithWarningPrinter(streams)
}

func runVersion() int {
	fmt.Printf("kubernetes %s\netcd %s\n", version.Get().GitVersion, etcdversion.Version)
	return 0
}
