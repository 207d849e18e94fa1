package deploy_test

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const k8sDir = "k8s"

type kustomization struct {
	Namespace       string   `json:"namespace"`
	Resources       []string `json:"resources"`
	SecretGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"secretGenerator"`
	ConfigMapGenerator []struct {
		Name     string   `json:"name"`
		Literals []string `json:"literals"`
	} `json:"configMapGenerator"`
}

// k8sObject holds the fields of the kinds the manifests use that the test
// checks.
type k8sObject struct {
	file       string
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Data       map[string]string `json:"data"`
	StringData map[string]string `json:"stringData"`
	Spec       struct {
		Replicas    *int            `json:"replicas"`
		ServiceName string          `json:"serviceName"`
		Selector    json.RawMessage `json:"selector"`
		Template    struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Spec podSpec `json:"spec"`
		} `json:"template"`
		Ports []struct {
			Name       string          `json:"name"`
			Port       int             `json:"port"`
			TargetPort json.RawMessage `json:"targetPort"`
		} `json:"ports"`
		ClusterIP      string          `json:"clusterIP"`
		MinAvailable   json.RawMessage `json:"minAvailable"`
		MaxUnavailable json.RawMessage `json:"maxUnavailable"`
	} `json:"spec"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsNonRoot *bool `json:"runAsNonRoot"`
		RunAsUser    *int  `json:"runAsUser"`
	} `json:"securityContext"`
	Containers []container `json:"containers"`
	Volumes    []struct {
		Name   string `json:"name"`
		Secret *struct {
			SecretName string `json:"secretName"`
		} `json:"secret"`
		ConfigMap *struct {
			Name string `json:"name"`
		} `json:"configMap"`
	} `json:"volumes"`
}

type container struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
			ConfigMapKeyRef *keyRef `json:"configMapKeyRef"`
			SecretKeyRef    *keyRef `json:"secretKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	LivenessProbe  *probe `json:"livenessProbe"`
	ReadinessProbe *probe `json:"readinessProbe"`
	VolumeMounts   []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
}

type keyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

type probe struct {
	HTTPGet *struct {
		Path string          `json:"path"`
		Port json.RawMessage `json:"port"`
	} `json:"httpGet"`
}

// labelSelector reads a Service's selector (a map) or a workload's and a
// PodDisruptionBudget's ({matchLabels}).
func labelSelector(raw json.RawMessage) map[string]string {
	var s struct {
		MatchLabels map[string]string `json:"matchLabels"`
	}
	if json.Unmarshal(raw, &s) == nil && s.MatchLabels != nil {
		return s.MatchLabels
	}
	var m map[string]string
	_ = json.Unmarshal(raw, &m)
	return m
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// splitDocs splits a multi-document YAML file at its --- lines.
func splitDocs(text string) []string {
	var docs []string
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(text, -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

// intOrName reads an IntOrString port.
func intOrName(raw json.RawMessage) (int, string) {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n, ""
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	return 0, s
}

// k8sVar is Kubernetes' $(VAR) in command and args.
var k8sVar = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func TestKubernetes(t *testing.T) {
	c := sluiceCLI(t)
	df := readDockerfile(t)

	kb, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kz kustomization
	if err := yaml.Unmarshal(kb, &kz); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	secretsDir := runSetup(t, filepath.Join(k8sDir, "setup.sh"))

	// Every object, and the Secrets and ConfigMaps with their keys.
	var objs []*k8sObject
	secrets := map[string]map[string]string{} // name => key => local file ("" if inline)
	configMaps := map[string]map[string]string{}
	for _, g := range kz.SecretGenerator {
		keys := map[string]string{}
		for _, f := range g.Files {
			key, file, ok := strings.Cut(f, "=")
			if !ok {
				key, file = path.Base(f), f
			}
			local := filepath.Join(k8sDir, file)
			if rest, ok := strings.CutPrefix(filepath.ToSlash(filepath.Clean(file)), "secrets/"); ok {
				local = filepath.Join(secretsDir, rest)
			}
			if _, err := os.Stat(local); err != nil {
				t.Errorf("kustomization.yaml: secretGenerator %s: %s is not made by setup.sh (%v)", g.Name, file, err)
			}
			keys[key] = local
		}
		secrets[g.Name] = keys
	}
	for _, g := range kz.ConfigMapGenerator {
		keys := map[string]string{}
		for _, l := range g.Literals {
			k, v, _ := strings.Cut(l, "=")
			keys[k] = v
		}
		configMaps[g.Name] = keys
	}
	for _, r := range kz.Resources {
		b, err := os.ReadFile(filepath.Join(k8sDir, r))
		if err != nil {
			t.Fatalf("kustomization.yaml: resource %s: %v", r, err)
		}
		for i, doc := range splitDocs(string(b)) {
			o := &k8sObject{file: fmt.Sprintf("%s/%s (document %d)", k8sDir, r, i+1)}
			if err := yaml.Unmarshal([]byte(doc), o); err != nil {
				t.Fatalf("%s: %v", o.file, err)
			}
			if o.Kind == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: no kind or name", o.file)
			}
			objs = append(objs, o)
			switch o.Kind {
			case "Secret":
				keys := map[string]string{}
				for k := range o.Data {
					keys[k] = ""
				}
				for k := range o.StringData {
					keys[k] = ""
				}
				secrets[o.Metadata.Name] = keys
			case "ConfigMap":
				configMaps[o.Metadata.Name] = o.Data
			}
		}
	}
	all, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range all {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(kz.Resources, b) {
			t.Errorf("%s is not in kustomization.yaml's resources: kubectl apply -k would skip it", f)
		}
	}

	byKind := map[string][]*k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = append(byKind[o.Kind], o)
	}
	workloads := append(slices.Clone(byKind["Deployment"]), byKind["StatefulSet"]...)
	var ca *x509.Certificate
	if f := secrets["sluice-coordinator-tls"]["ca.pem"]; f != "" {
		ca = readCert(t, f)
	}

	var coordinators, workers []*k8sObject
	containerPorts := map[*k8sObject]map[string]int{} // workload => port name => number
	for _, w := range workloads {
		where := fmt.Sprintf("%s: %s %s", w.file, w.Kind, w.Metadata.Name)
		pod := w.Spec.Template.Spec
		if !selects(labelSelector(w.Spec.Selector), w.Spec.Template.Metadata.Labels) {
			t.Errorf("%s: the selector does not select the pod template's labels", where)
		}
		if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: no securityContext.runAsNonRoot: true", where)
		}
		volumes := map[string]string{} // volume => Secret or ConfigMap name
		for _, v := range pod.Volumes {
			switch {
			case v.Secret != nil:
				if _, ok := secrets[v.Secret.SecretName]; !ok {
					t.Errorf("%s: volume %s: Secret %s is not defined (resources or secretGenerator)", where, v.Name, v.Secret.SecretName)
				}
				volumes[v.Name] = "secret/" + v.Secret.SecretName
			case v.ConfigMap != nil:
				if _, ok := configMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("%s: volume %s: ConfigMap %s is not defined", where, v.Name, v.ConfigMap.Name)
				}
				volumes[v.Name] = "configmap/" + v.ConfigMap.Name
			}
		}
		ports := map[string]int{}
		containerPorts[w] = ports
		for _, ct := range pod.Containers {
			cwhere := fmt.Sprintf("%s container %s", where, ct.Name)
			// $(VAR): defined in env, from a ConfigMap or Secret that exists.
			env := map[string]string{}
			podName := ""
			for _, e := range ct.Env {
				switch {
				case e.ValueFrom == nil:
					env[e.Name] = e.Value
				case e.ValueFrom.FieldRef != nil:
					env[e.Name] = "$(" + e.Name + ")" // known only in the pod
					if e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
						podName = e.Name
					}
				case e.ValueFrom.ConfigMapKeyRef != nil:
					r := e.ValueFrom.ConfigMapKeyRef
					v, ok := configMaps[r.Name][r.Key]
					if !ok {
						t.Errorf("%s: env %s: ConfigMap %s has no key %s", cwhere, e.Name, r.Name, r.Key)
					}
					env[e.Name] = v
				case e.ValueFrom.SecretKeyRef != nil:
					r := e.ValueFrom.SecretKeyRef
					if _, ok := secrets[r.Name][r.Key]; !ok {
						t.Errorf("%s: env %s: Secret %s has no key %s", cwhere, e.Name, r.Name, r.Key)
					}
					env[e.Name] = "secret"
				}
			}
			words := append(slices.Clone(ct.Command), ct.Args...)
			for _, w := range words {
				for _, m := range k8sVar.FindAllStringSubmatch(w, -1) {
					if _, ok := env[m[1]]; !ok {
						t.Errorf("%s: %s uses $(%s), which its env does not define (Kubernetes would pass it as is)", cwhere, w, m[1])
					}
				}
			}
			args := make([]string, len(words))
			for i, w := range words {
				args[i] = k8sVar.ReplaceAllStringFunc(w, func(s string) string {
					v := env[k8sVar.FindStringSubmatch(s)[1]]
					if v == "$("+k8sVar.FindStringSubmatch(s)[1]+")" {
						return s
					}
					return v
				})
			}
			if len(ct.Command) > 0 {
				t.Errorf("%s: command replaces the image's ENTRYPOINT (sluice); use args", cwhere)
			}
			for _, e := range c.check(t, cwhere, args) {
				t.Error(e)
			}
			for _, p := range ct.Ports {
				ports[p.Name] = p.ContainerPort
				if !df.expose[p.ContainerPort] {
					t.Errorf("%s: containerPort %d, but the Dockerfile EXPOSEs %v", cwhere, p.ContainerPort, sortedInts(df.expose))
				}
			}
			portOf := func(flag string) int {
				v := flagValue(args, flag)
				if v == "" {
					return 0
				}
				_, n, ok := hostPort(v)
				if !ok {
					t.Errorf("%s: --%s=%s is not host:port", cwhere, flag, v)
				}
				return n
			}
			httpPort := portOf("http-addr")
			grpcPort := portOf("grpc-addr")
			if grpcPort != 0 && !slices.Contains(slices.Collect(maps.Values(ports)), grpcPort) {
				t.Errorf("%s: --grpc-addr port %d is no containerPort", cwhere, grpcPort)
			}
			if args0(args) == "coordinator" {
				if _, ap, ok := hostPort(flagValue(args, "advertise-addr")); !ok || ap != grpcPort {
					t.Errorf("%s: --advertise-addr=%s, want the port of --grpc-addr (%d)", cwhere, flagValue(args, "advertise-addr"), grpcPort)
				}
			}
			// Probes: the paths the server serves, on the port of --http-addr.
			for _, pr := range []struct {
				kind, want string
				p          *probe
			}{{"livenessProbe", livenessPath, ct.LivenessProbe}, {"readinessProbe", readinessPath, ct.ReadinessProbe}} {
				if pr.p == nil || pr.p.HTTPGet == nil {
					t.Errorf("%s: no %s httpGet", cwhere, pr.kind)
					continue
				}
				if pr.p.HTTPGet.Path != pr.want {
					t.Errorf("%s: %s path %s, want %s", cwhere, pr.kind, pr.p.HTTPGet.Path, pr.want)
				}
				n, name := intOrName(pr.p.HTTPGet.Port)
				if name != "" {
					n = ports[name]
				}
				if n == 0 || n != httpPort {
					t.Errorf("%s: %s port %s is %d, --http-addr's port is %d", cwhere, pr.kind, pr.p.HTTPGet.Port, n, httpPort)
				}
			}
			// Files the process reads are keys of a mounted Secret or
			// ConfigMap; a $(POD_NAME) in a path is each replica's name.
			mounts := map[string]string{}
			for _, m := range ct.VolumeMounts {
				if _, ok := volumes[m.Name]; !ok {
					t.Errorf("%s: volumeMount %s: no such volume", cwhere, m.Name)
				}
				mounts[m.MountPath] = volumes[m.Name]
			}
			for _, f := range fileFlags {
				for _, v := range flagValues(args, f) {
					for _, file := range podFiles(t, cwhere, w, podName, v) {
						src, ok := mounts[path.Dir(file)]
						kind, name, _ := strings.Cut(src, "/")
						switch {
						case !ok:
							t.Errorf("%s: --%s=%s: %s is not a mounted volume", cwhere, f, v, path.Dir(file))
						case kind == "secret":
							if _, ok := secrets[name][path.Base(file)]; !ok {
								t.Errorf("%s: --%s=%s: Secret %s has no key %s", cwhere, f, v, name, path.Base(file))
							}
						case kind == "configmap":
							if _, ok := configMaps[name][path.Base(file)]; !ok {
								t.Errorf("%s: --%s=%s: ConfigMap %s has no key %s", cwhere, f, v, name, path.Base(file))
							}
						}
					}
				}
			}
			// Under mutual TLS a worker's --id is its certificate's
			// CommonName, with role (OU) worker.
			if args0(args) == "worker" {
				id := flagValue(words, "id")
				cert := flagValue(words, "tls-cert")
				ids := podFiles(t, cwhere, w, podName, id)
				certs := podFiles(t, cwhere, w, podName, cert)
				for i := range ids {
					if cert == "" {
						break
					}
					src := mounts[path.Dir(certs[i])]
					_, name, _ := strings.Cut(src, "/")
					local := secrets[name][path.Base(certs[i])]
					if local == "" {
						continue
					}
					crt := readCert(t, local)
					if crt.Subject.CommonName != ids[i] || !slices.Equal(crt.Subject.OrganizationalUnit, []string{"worker"}) {
						t.Errorf("%s: pod %d: --id=%s but %s is CN=%s OU=%v", cwhere, i, ids[i], certs[i], crt.Subject.CommonName, crt.Subject.OrganizationalUnit)
					}
					if ca != nil {
						if err := verifies(ca, crt, ""); err != nil {
							t.Errorf("%s: %s does not verify against the CA: %v", cwhere, certs[i], err)
						}
					}
				}
			}
			switch args0(args) {
			case "coordinator":
				coordinators = append(coordinators, w)
			case "worker":
				workers = append(workers, w)
			}
		}
	}
	if len(coordinators) != 1 || coordinators[0].Kind != "Deployment" || coordinators[0].Spec.Replicas == nil || *coordinators[0].Spec.Replicas != 2 {
		t.Errorf("want the coordinators as one Deployment with 2 replicas")
	}
	if len(workers) != 1 {
		t.Errorf("want one workload of workers, found %d", len(workers))
	}

	// Services select pods, and their target ports are those pods' ports.
	services := map[string]*k8sObject{}
	for _, s := range byKind["Service"] {
		services[s.Metadata.Name] = s
		where := fmt.Sprintf("%s: Service %s", s.file, s.Metadata.Name)
		sel := labelSelector(s.Spec.Selector)
		var targets []*k8sObject
		for _, w := range workloads {
			if selects(sel, w.Spec.Template.Metadata.Labels) {
				targets = append(targets, w)
			}
		}
		if len(targets) == 0 {
			t.Errorf("%s: the selector %v selects no pods", where, sel)
		}
		for _, p := range s.Spec.Ports {
			n, name := intOrName(p.TargetPort)
			for _, w := range targets {
				ok := false
				for pn, pv := range containerPorts[w] {
					ok = ok || (name != "" && pn == name) || (name == "" && pv == n) || (len(p.TargetPort) == 0 && pv == p.Port)
				}
				if !ok {
					t.Errorf("%s: port %s targets %s, which %s %s does not expose", where, p.Name, p.TargetPort, w.Kind, w.Metadata.Name)
				}
			}
		}
	}
	for _, w := range byKind["StatefulSet"] {
		if s, ok := services[w.Spec.ServiceName]; !ok || s.Spec.ClusterIP != "None" {
			t.Errorf("%s: StatefulSet %s: serviceName %q is not a headless Service of these manifests", w.file, w.Metadata.Name, w.Spec.ServiceName)
		}
	}
	// Workers dial a Service at its gRPC port, which reaches the
	// coordinators' --grpc-addr, and the certificate names it.
	for _, w := range workers {
		for _, ct := range w.Spec.Template.Spec.Containers {
			for _, addr := range splitList(flagValue(ct.Args, "coordinator")) {
				host, port, ok := hostPort(addr)
				svcName, _, _ := strings.Cut(host, ".")
				s := services[svcName]
				if !ok || s == nil {
					t.Errorf("%s: worker --coordinator %s is no Service of these manifests", w.file, addr)
					continue
				}
				if len(coordinators) == 0 || !selects(labelSelector(s.Spec.Selector), coordinators[0].Spec.Template.Metadata.Labels) {
					t.Errorf("%s: worker --coordinator %s: Service %s does not select the coordinators", w.file, addr, svcName)
				}
				found := false
				for _, p := range s.Spec.Ports {
					if p.Port != port {
						continue
					}
					found = true
					n, name := intOrName(p.TargetPort)
					if name != "" && len(coordinators) > 0 {
						n = containerPorts[coordinators[0]][name]
					}
					for _, cc := range coordinators {
						for _, cct := range cc.Spec.Template.Spec.Containers {
							if _, gp, _ := hostPort(flagValue(cct.Args, "grpc-addr")); gp != n {
								t.Errorf("%s: worker --coordinator %s reaches port %d of the coordinators, which serve gRPC on %d", w.file, addr, n, gp)
							}
						}
					}
				}
				if !found {
					t.Errorf("%s: worker --coordinator %s: Service %s has no port %d", w.file, addr, svcName, port)
				}
				if ca != nil {
					server := readCert(t, secrets["sluice-coordinator-tls"]["server.pem"])
					for _, h := range []string{host, svcName + "." + kz.Namespace + ".svc"} {
						if err := verifies(ca, server, h); err != nil {
							t.Errorf("the coordinators' certificate does not verify for %s: %v", h, err)
						}
					}
				}
			}
		}
	}
	// Disruption budgets keep a coordinator up.
	covered := false
	for _, pdb := range byKind["PodDisruptionBudget"] {
		sel := labelSelector(pdb.Spec.Selector)
		any := false
		for _, w := range workloads {
			any = any || selects(sel, w.Spec.Template.Metadata.Labels)
		}
		if !any {
			t.Errorf("%s: PodDisruptionBudget %s selects no pods", pdb.file, pdb.Metadata.Name)
		}
		if len(coordinators) > 0 && selects(sel, coordinators[0].Spec.Template.Metadata.Labels) {
			covered = true
			n, _ := intOrName(pdb.Spec.MinAvailable)
			if n < 1 && len(pdb.Spec.MaxUnavailable) == 0 {
				t.Errorf("%s: PodDisruptionBudget %s lets every coordinator go", pdb.file, pdb.Metadata.Name)
			}
		}
	}
	if !covered {
		t.Error("no PodDisruptionBudget covers the coordinators")
	}
}

// podFiles expands $(POD) in v for each pod of w: a StatefulSet's pods are
// NAME-0 .. NAME-(replicas-1); a Deployment's names are random, so a path
// that depends on one is an error.
func podFiles(t *testing.T, where string, w *k8sObject, podVar, v string) []string {
	t.Helper()
	if podVar == "" || !strings.Contains(v, "$("+podVar+")") {
		return []string{v}
	}
	if w.Kind != "StatefulSet" {
		t.Errorf("%s: %s depends on the pod's name, which a %s makes up at random", where, v, w.Kind)
		return nil
	}
	n := 1
	if w.Spec.Replicas != nil {
		n = *w.Spec.Replicas
	}
	var out []string
	for i := range n {
		out = append(out, strings.ReplaceAll(v, "$("+podVar+")", w.Metadata.Name+"-"+strconv.Itoa(i)))
	}
	return out
}
