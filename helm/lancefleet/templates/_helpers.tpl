{{/*
Names, labels, images and the merging of global and per-role values.
The LanceFleet roles are query-node, plan-executor, control-plane and indexer; each has a
values block (queryNode, planExecutor, controlPlane, indexer) of the same shape.
*/}}

{{- define "lancefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lancefleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 38 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of one component's objects: (dict "ctx" $ "component" "query-node"). */}}
{{- define "lancefleet.componentName" -}}
{{- printf "%s-%s" (include "lancefleet.fullname" .ctx) .component -}}
{{- end -}}

{{- define "lancefleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object: (dict "ctx" $ "component" "query-node"). */}}
{{- define "lancefleet.labels" -}}
helm.sh/chart: {{ include "lancefleet.chart" .ctx }}
{{ include "lancefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: lancefleet
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "lancefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lancefleet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "lancefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lancefleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret every LanceFleet container takes its environment from, or "" for none. */}}
{{- define "lancefleet.secretName" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else if or .Values.secret.apiKeys .Values.secret.env -}}
{{- include "lancefleet.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* Role names, their values keys and their container ports. */}}
{{- define "lancefleet.roles" -}}
query-node: queryNode
plan-executor: planExecutor
control-plane: controlPlane
indexer: indexer
{{- end -}}

{{- define "lancefleet.roleValues" -}}
{{- $key := get (include "lancefleet.roles" . | fromYaml) .role -}}
{{- toJson (get .ctx.Values $key) -}}
{{- end -}}

{{/* Container ports of each role: name -> port. The configuration binds these. */}}
{{- define "lancefleet.ports" -}}
query-node:
  http: 8080
  flight: 10025
plan-executor:
  grpc: 7070
  metrics: 9464
control-plane:
  http: 8070
indexer:
  metrics: 8090
{{- end -}}

{{- define "lancefleet.port" -}}
{{- get (get (include "lancefleet.ports" .ctx | fromYaml) .role) .name | int -}}
{{- end -}}

{{- define "lancefleet.listen" -}}
{{- printf "%s:%s" (toString .ctx.Values.listenHost) (include "lancefleet.port" .) -}}
{{- end -}}

{{/* An image reference: (dict "image" (merged image values) "ctx" $). */}}
{{- define "lancefleet.imageRef" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString $tag) -}}
{{- end -}}
{{- end -}}

{{/* The LanceFleet image with a role's overrides: (dict "ctx" $ "values" $roleValues). */}}
{{- define "lancefleet.image" -}}
{{- $image := mergeOverwrite (deepCopy .ctx.Values.image) (deepCopy (default dict .values.image)) -}}
{{- include "lancefleet.imageRef" (dict "image" $image "ctx" .ctx) -}}
{{- end -}}

{{- define "lancefleet.imagePullPolicy" -}}
{{- $image := mergeOverwrite (deepCopy .ctx.Values.image) (deepCopy (default dict .values.image)) -}}
{{- $image.pullPolicy -}}
{{- end -}}

{{/* Whether the cluster has etcd (in-chart or external). */}}
{{- define "lancefleet.hasEtcd" -}}
{{- if or .Values.etcd.enabled .Values.externalEtcd.endpoints -}}true{{- end -}}
{{- end -}}

{{/* The etcd client endpoints as a JSON list. */}}
{{- define "lancefleet.etcdEndpoints" -}}
{{- $endpoints := list -}}
{{- if .Values.etcd.enabled -}}
{{- $name := include "lancefleet.componentName" (dict "ctx" . "component" "etcd") -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $endpoints = append $endpoints (printf "http://%s-%d.%s-headless.%s.svc.%s:2379" $name $i $name $.Release.Namespace $.Values.clusterDomain) -}}
{{- end -}}
{{- else -}}
{{- $endpoints = .Values.externalEtcd.endpoints -}}
{{- end -}}
{{- toJson $endpoints -}}
{{- end -}}

{{/* Executors' gRPC addresses by pod name, for a cluster without etcd (a fixed list). */}}
{{/* "https" when the pods serve TLS (tls.secretName), else "http". */}}
{{- define "lancefleet.scheme" -}}
{{- ternary "https" "http" (not (empty .Values.tls.secretName)) -}}
{{- end -}}

{{/* Where every LanceFleet pod mounts tls.secretName, and externalEtcd.tls.secretName. */}}
{{- define "lancefleet.tlsDir" -}}/etc/lancefleet-tls{{- end -}}
{{- define "lancefleet.etcdTlsDir" -}}/etc/lancefleet-etcd-tls{{- end -}}

{{- define "lancefleet.staticExecutors" -}}
{{- $name := include "lancefleet.componentName" (dict "ctx" . "component" "plan-executor") -}}
{{- $executors := list -}}
{{- range $i := until (int .Values.planExecutor.replicas) -}}
{{- $pod := printf "%s-%d" $name $i -}}
{{- $executors = append $executors (dict "id" $pod "address" (printf "%s://%s.%s-headless.%s.svc.%s:7070" (include "lancefleet.scheme" $) $pod $name $.Release.Namespace $.Values.clusterDomain)) -}}
{{- end -}}
{{- toJson $executors -}}
{{- end -}}

{{/*
A Kubernetes quantity or a byte size as bytes (an integer): 100Gi, 512Mi, 4GiB, 500GB,
1.5Gi, 1048576. (dict "value" "100Gi" "what" "planExecutor.cache.volume.size")
*/}}
{{- define "lancefleet.bytes" -}}
{{- $s := toString .value | trim -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $s -}}
{{- $unit := trimPrefix $number $s | trim -}}
{{- $units := dict "" 1.0 "B" 1.0 "k" 1e3 "K" 1e3 "kB" 1e3 "KB" 1e3 "M" 1e6 "MB" 1e6 "G" 1e9 "GB" 1e9 "T" 1e12 "TB" 1e12 "P" 1e15 "PB" 1e15 "Ki" 1024.0 "KiB" 1024.0 "Mi" 1048576.0 "MiB" 1048576.0 "Gi" 1073741824.0 "GiB" 1073741824.0 "Ti" 1099511627776.0 "TiB" 1099511627776.0 "Pi" 1125899906842624.0 "PiB" 1125899906842624.0 -}}
{{- if or (not $number) (not (hasKey $units $unit)) -}}
{{- fail (printf "%s: %q is not a size (write e.g. 100Gi, 512Mi, 4GiB or a number of bytes)" .what $s) -}}
{{- end -}}
{{- printf "%.0f" (mulf (float64 $number) (get $units $unit)) -}}
{{- end -}}

{{/* Bytes as the largest exact binary unit, e.g. 91268055040 -> "87040MiB". */}}
{{- define "lancefleet.humanBytes" -}}
{{- $b := float64 . -}}
{{- $gib := 1073741824.0 -}}{{- $mib := 1048576.0 -}}{{- $kib := 1024.0 -}}
{{- if and (gt $b 0.0) (eq (mod (int64 $b) (int64 $gib)) (int64 0)) -}}
{{- printf "%dGiB" (int64 (divf $b $gib)) -}}
{{- else if and (gt $b 0.0) (eq (mod (int64 $b) (int64 $mib)) (int64 0)) -}}
{{- printf "%dMiB" (int64 (divf $b $mib)) -}}
{{- else if and (gt $b 0.0) (eq (mod (int64 $b) (int64 $kib)) (int64 0)) -}}
{{- printf "%dKiB" (int64 (divf $b $kib)) -}}
{{- else -}}
{{- printf "%d" (int64 $b) -}}
{{- end -}}
{{- end -}}

{{/*
The executors' object cache, worked out from the values: memory, disk (bytes, floored to
MiB) and chunk, checked against the container's memory and the cache volume.
Returns JSON {"memory": "...", "disk": "...", "chunk": "...", "diskDir": "..."|null}.
*/}}
{{- define "lancefleet.executorCache" -}}
{{- $pe := .Values.planExecutor -}}
{{- $cache := $pe.cache -}}
{{- $mib := 1048576.0 -}}
{{- $out := dict "chunk" (toString $cache.chunk) -}}
{{- $limits := default dict (default dict $pe.resources).limits -}}
{{- $requests := default dict (default dict $pe.resources).requests -}}
{{- $podMemory := default $requests.memory $limits.memory -}}
{{- if $cache.memory -}}
{{- $memory := include "lancefleet.bytes" (dict "value" $cache.memory "what" "planExecutor.cache.memory") | float64 -}}
{{- if $podMemory -}}
{{- $limit := include "lancefleet.bytes" (dict "value" $podMemory "what" "planExecutor.resources memory") | float64 -}}
{{- if ge $memory $limit -}}
{{- fail (printf "planExecutor.cache.memory (%s) must be smaller than the container's memory (%s): the executor also needs memory beyond its cache" (toString $cache.memory) (toString $podMemory)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out "memory" (toString $cache.memory) -}}
{{- else if $podMemory -}}
{{- $limit := include "lancefleet.bytes" (dict "value" $podMemory "what" "planExecutor.resources memory") | float64 -}}
{{- $memory := mulf (floor (divf (mulf $limit (float64 $cache.memoryFraction)) $mib)) $mib -}}
{{- $_ := set $out "memory" (include "lancefleet.humanBytes" $memory) -}}
{{- end -}}
{{- $volume := $cache.volume -}}
{{- if ne $volume.type "none" -}}
{{- $_ := set $out "diskDir" $cache.mountPath -}}
{{- $size := include "lancefleet.bytes" (dict "value" $volume.size "what" "planExecutor.cache.volume.size") | float64 -}}
{{- if $cache.disk -}}
{{- $disk := include "lancefleet.bytes" (dict "value" $cache.disk "what" "planExecutor.cache.disk") | float64 -}}
{{- if gt $disk $size -}}
{{- fail (printf "planExecutor.cache.disk (%s) is larger than its volume, planExecutor.cache.volume.size (%s): the cache would fill the disk" (toString $cache.disk) (toString $volume.size)) -}}
{{- end -}}
{{- $_ := set $out "disk" (toString $cache.disk) -}}
{{- else -}}
{{- $disk := mulf (floor (divf (mulf $size (float64 $cache.diskFraction)) $mib)) $mib -}}
{{- $_ := set $out "disk" (include "lancefleet.humanBytes" $disk) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Seconds between SIGTERM and SIGKILL for a role: (dict "ctx" $ "role" "plan-executor"). */}}
{{- define "lancefleet.terminationGracePeriod" -}}
{{- $v := include "lancefleet.roleValues" . | fromJson -}}
{{- if not (kindIs "invalid" $v.terminationGracePeriodSeconds) -}}
{{- $v.terminationGracePeriodSeconds | int -}}
{{- else if eq .role "plan-executor" -}}
{{- add (int $v.preStopSleepSeconds) (int $v.stoppingPropagationSeconds) (int $v.shutdownGraceSeconds) 20 -}}
{{- else if eq .role "query-node" -}}
{{- add (int $v.preStopSleepSeconds) (int $v.shutdownGraceSeconds) 10 -}}
{{- else if eq .role "indexer" -}}
{{- add (int $v.preStopSleepSeconds) 60 -}}
{{- else -}}
{{- add (int $v.preStopSleepSeconds) 30 -}}
{{- end -}}
{{- end -}}

{{/* Checks of values that JSON schema cannot express. */}}
{{- define "lancefleet.validate" -}}
{{- if not (include "lancefleet.hasEtcd" .) -}}
{{- if .Values.controlPlane.enabled -}}
{{- fail "controlPlane.enabled needs etcd: enable etcd.enabled or set externalEtcd.endpoints, or disable controlPlane" -}}
{{- end -}}
{{- if .Values.indexer.enabled -}}
{{- fail "indexer.enabled needs etcd (indexers follow table changes there): enable etcd.enabled or set externalEtcd.endpoints, or disable indexer" -}}
{{- end -}}
{{- if and .Values.queryNode.enabled (not .Values.planExecutor.enabled) -}}
{{- fail "queryNode.enabled without etcd needs planExecutor.enabled: query nodes get the executors as a fixed list" -}}
{{- end -}}
{{- end -}}
{{- $hpa := .Values.queryNode.autoscaling -}}
{{- if and $hpa.enabled (not (or $hpa.targetCPUUtilizationPercentage $hpa.targetMemoryUtilizationPercentage)) -}}
{{- fail "queryNode.autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- fail (printf "queryNode.autoscaling.minReplicas (%d) is above maxReplicas (%d)" (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.etcd.enabled .Values.externalEtcd.endpoints -}}
{{- fail "set either etcd.enabled or externalEtcd.endpoints, not both" -}}
{{- end -}}
{{- if .Values.externalEtcd.tls.secretName -}}
{{- if or .Values.etcd.enabled (not .Values.externalEtcd.endpoints) -}}
{{- fail "externalEtcd.tls.secretName is for externalEtcd.endpoints (the chart's own etcd serves plain HTTP inside the release)" -}}
{{- end -}}
{{- range .Values.externalEtcd.endpoints -}}
{{- if not (hasPrefix "https://" .) -}}
{{- fail (printf "externalEtcd.tls.secretName is set: every externalEtcd.endpoints entry must be https://, got %s" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.tls.secretName -}}
{{- range $source := list .Values.config .Values.queryNode.config .Values.planExecutor.config .Values.controlPlane.config .Values.indexer.config -}}
{{- if hasKey (default dict $source) "tls" -}}
{{- fail "tls.secretName is set: the chart writes the [tls] section, remove it from config" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $managed := dict "storage" (list "root") "rest" (list "listen" "shutdown_grace") "flight" (list "listen") "executor" (list "listen" "metrics_listen" "node_id" "advertise_address" "shutdown_grace") "cache" (list "disk_dir") "control" (list "etcd_endpoints" "listen" "node_id" "stopping_propagation") "indexer" (list "listen") "cluster" (list "executors") -}}
{{- $sources := list (list "config" .Values.config) -}}
{{- range $role, $key := include "lancefleet.roles" . | fromYaml -}}
{{- $sources = append $sources (list (printf "%s.config" $key) (get $.Values $key).config) -}}
{{- end -}}
{{- range $source := $sources -}}
{{- $config := default dict (index $source 1) -}}
{{- range $section, $keys := $managed -}}
{{- $values := default dict (get $config $section) -}}
{{- range $k := $keys -}}
{{- if hasKey $values $k -}}
{{- fail (printf "%s.%s.%s is set by the chart (docs/kubernetes.md, \"What the chart sets\"): remove it" (index $source 0) $section $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $planCache := default dict (default dict .Values.planExecutor.config).cache -}}
{{- range $k := list "memory" "disk" "chunk" -}}
{{- if hasKey $planCache $k -}}
{{- fail (printf "planExecutor.config.cache.%s: use planExecutor.cache.%s" $k $k) -}}
{{- end -}}
{{- end -}}
{{- if .Values.planExecutor.enabled -}}
{{- $_ := include "lancefleet.executorCache" . -}}
{{- end -}}
{{- end -}}

{{/* A PodDisruptionBudget's spec fields: (dict "pdb" $values "what" "queryNode"). */}}
{{- define "lancefleet.pdbSpec" -}}
{{- $pdb := omit .pdb "enabled" -}}
{{- $set := list -}}
{{- range $k := list "maxUnavailable" "minAvailable" -}}
{{- if and (hasKey $pdb $k) (not (kindIs "invalid" (index $pdb $k))) }}{{ $set = append $set $k }}{{ end -}}
{{- end -}}
{{- if ne (len $set) 1 -}}
{{- fail (printf "%s.podDisruptionBudget: set one of maxUnavailable and minAvailable (the other to null), got %v" .what $set) -}}
{{- end -}}
{{- range $k, $val := $pdb -}}
{{- if kindIs "invalid" $val }}{{ $_ := unset $pdb $k }}{{ end -}}
{{- end -}}
{{- toYaml $pdb -}}
{{- end -}}
