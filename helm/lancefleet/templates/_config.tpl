{{/*
Each role's configuration file: the TOML `lancefleet --config` reads (docs/configuration.md).
`config` < the role's `config` < what the chart sets (addresses, storage, etcd, cache).
Rendered by hand, not with toToml: Helm's numbers are float64 and toToml would write
`replicas = 2.0`, which the binary's strict parser refuses.
*/}}

{{/* Sections of the user's configuration a role's file leaves out: those only other roles
read. Every other section (storage, cluster, cache, control, log, trace, and any new one)
goes to every role: executors place prewarmed fragments with [cluster] as query nodes do,
and the control plane needs a storage root even though it reads no table (without one it
would create the default ./lancefleet-data on the read-only root file system). */}}
{{- define "lancefleet.configExcluded" -}}
query-node: [executor, indexer]
plan-executor: [rest, flight, auth, indexer]
control-plane: [rest, flight, auth, executor, indexer, cache]
indexer: [rest, flight, auth, executor]
{{- end -}}

{{/* The configuration of a role as JSON: (dict "ctx" $ "role" "query-node"). */}}
{{- define "lancefleet.configData" -}}
{{- $ctx := .ctx -}}
{{- $role := .role -}}
{{- $v := include "lancefleet.roleValues" . | fromJson -}}
{{- $merged := mergeOverwrite (deepCopy (default dict $ctx.Values.config)) (deepCopy (default dict $v.config)) -}}
{{- $excluded := get (include "lancefleet.configExcluded" $ctx | fromYaml) $role -}}
{{- $config := dict -}}
{{- range $section, $body := $merged -}}
{{- if not (has $section $excluded) -}}
{{- $_ := set $config $section $body -}}
{{- end -}}
{{- end -}}
{{- $managed := dict -}}
{{- $_ := set $managed "storage" (dict "root" $ctx.Values.storage.root) -}}
{{- if $ctx.Values.storage.options -}}
{{- $options := dict -}}
{{- range $k, $val := $ctx.Values.storage.options -}}
{{- $_ := set $options $k (toString $val) -}}
{{- end -}}
{{- $_ := set $managed.storage "options" $options -}}
{{- end -}}
{{- $control := dict -}}
{{- if include "lancefleet.hasEtcd" $ctx -}}
{{- $_ := set $control "etcd_endpoints" (include "lancefleet.etcdEndpoints" $ctx | fromJsonArray) -}}
{{- $cluster := default dict $merged.control -}}
{{- $_ := set $control "cluster" (default (include "lancefleet.fullname" $ctx) $cluster.cluster) -}}
{{- with $ctx.Values.externalEtcd.tls.secretName -}}
{{- $dir := include "lancefleet.etcdTlsDir" $ctx -}}
{{- $etcdTls := dict "ca" (printf "%s/ca.crt" $dir) -}}
{{- if $ctx.Values.externalEtcd.tls.clientCertificate -}}
{{- $_ := set $etcdTls "cert" (printf "%s/tls.crt" $dir) -}}
{{- $_ := set $etcdTls "key" (printf "%s/tls.key" $dir) -}}
{{- end -}}
{{- $_ := set $control "etcd_tls" $etcdTls -}}
{{- end -}}
{{- end -}}
{{- with $ctx.Values.tls.secretName -}}
{{- $dir := include "lancefleet.tlsDir" $ctx -}}
{{- $tls := dict "cert" (printf "%s/tls.crt" $dir) "key" (printf "%s/tls.key" $dir) -}}
{{- if $ctx.Values.tls.mutual -}}
{{- $_ := set $tls "ca" (printf "%s/ca.crt" $dir) -}}
{{- end -}}
{{- $_ := set $managed "tls" $tls -}}
{{- end -}}
{{- if eq $role "query-node" -}}
{{- with $ctx.Values.secret.apiKeys -}}
{{/* Keys given in plain text reach the servers as digests only (admin role); the Secret
keeps the first for `helm test`. */}}
{{- $auth := deepCopy (default dict $merged.auth) -}}
{{- $keys := default list $auth.keys -}}
{{- range $index, $key := . -}}
{{- $keys = append $keys (dict "id" (printf "key-%d" (add1 $index)) "sha256" (sha256sum (toString $key)) "role" "admin") -}}
{{- end -}}
{{- $_ := set $auth "keys" $keys -}}
{{- $_ := set $config "auth" $auth -}}
{{- end -}}
{{- $_ := set $managed "rest" (dict "listen" (include "lancefleet.listen" (dict "ctx" $ctx "role" $role "name" "http")) "shutdown_grace" (printf "%ds" (int $v.shutdownGraceSeconds))) -}}
{{- $_ := set $managed "flight" (dict "listen" (include "lancefleet.listen" (dict "ctx" $ctx "role" $role "name" "flight"))) -}}
{{- if not (include "lancefleet.hasEtcd" $ctx) -}}
{{- $_ := set $managed "cluster" (dict "executors" (include "lancefleet.staticExecutors" $ctx | fromJsonArray)) -}}
{{- end -}}
{{- else if eq $role "plan-executor" -}}
{{- $_ := set $managed "executor" (dict "listen" (include "lancefleet.listen" (dict "ctx" $ctx "role" $role "name" "grpc")) "metrics_listen" (include "lancefleet.listen" (dict "ctx" $ctx "role" $role "name" "metrics")) "shutdown_grace" (printf "%ds" (int $v.shutdownGraceSeconds))) -}}
{{- $_ := set $control "stopping_propagation" (printf "%ds" (int $v.stoppingPropagationSeconds)) -}}
{{- $cache := include "lancefleet.executorCache" $ctx | fromJson -}}
{{- $managedCache := dict "chunk" $cache.chunk -}}
{{- if $cache.memory -}}{{- $_ := set $managedCache "memory" $cache.memory -}}{{- end -}}
{{- if $cache.diskDir -}}
{{- $_ := set $managedCache "disk_dir" $cache.diskDir -}}
{{- $_ := set $managedCache "disk" $cache.disk -}}
{{- end -}}
{{- if $v.cache.encryption.secretName -}}
{{- $_ := set $managedCache "encryption_key_file" "/etc/lancefleet-cache-key/cache.key" -}}
{{- end -}}
{{- $_ := set $managed "cache" $managedCache -}}
{{- else if eq $role "control-plane" -}}
{{- $_ := set $control "listen" (include "lancefleet.listen" (dict "ctx" $ctx "role" $role "name" "http")) -}}
{{- else if eq $role "indexer" -}}
{{- $_ := set $managed "indexer" (dict "listen" (include "lancefleet.listen" (dict "ctx" $ctx "role" $role "name" "metrics"))) -}}
{{- end -}}
{{- if $control -}}
{{- $_ := set $managed "control" $control -}}
{{- end -}}
{{- toJson (mergeOverwrite $config $managed) -}}
{{- end -}}

{{/* A role's TOML file: (dict "ctx" $ "role" "query-node"). */}}
{{- define "lancefleet.configToml" -}}
# lancefleet {{ .role }}: rendered by the {{ .ctx.Chart.Name }} chart {{ .ctx.Chart.Version }}; see docs/configuration.md.
{{- $config := include "lancefleet.configData" . | fromJson -}}
{{- range $section := keys $config | sortAlpha }}
{{- $table := get $config $section }}
{{- if kindIs "map" $table }}

{{ include "lancefleet.tomlTable" (dict "prefix" $section "table" $table) }}
{{- else }}
{{- fail (printf "config.%s: every top-level key of the configuration is a section (a map)" $section) }}
{{- end }}
{{- end }}
{{ end -}}

{{/* One [table] and its sub-tables: (dict "prefix" "storage" "table" $map). */}}
{{- define "lancefleet.tomlTable" -}}
[{{ .prefix }}]
{{- $table := .table }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if and (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) }}
{{ include "lancefleet.tomlKey" $k }} = {{ include "lancefleet.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if kindIs "map" $v }}

{{ include "lancefleet.tomlTable" (dict "prefix" (printf "%s.%s" $.prefix (include "lancefleet.tomlKey" $k)) "table" $v) }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "lancefleet.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{/* A TOML value: whole numbers as integers, strings quoted, lists, inline tables. */}}
{{- define "lancefleet.tomlValue" -}}
{{- if kindIs "string" . -}}
{{- toJson . -}}
{{- else if kindIs "bool" . -}}
{{- ternary "true" "false" . -}}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (floor .) (float64 .) -}}{{- printf "%.0f" . -}}{{- else -}}{{- . -}}{{- end -}}
{{- else if or (kindIs "int" .) (kindIs "int64" .) (kindIs "int32" .) (kindIs "uint64" .) -}}
{{- printf "%d" . -}}
{{- else if kindIs "slice" . -}}
{{- $items := list -}}
{{- range . -}}{{- $items = append $items (include "lancefleet.tomlValue" .) -}}{{- end -}}
[{{ join ", " $items }}]
{{- else if kindIs "map" . -}}
{{- $items := list -}}
{{- $m := . -}}
{{- range $k := keys $m | sortAlpha -}}
{{- $items = append $items (printf "%s = %s" (include "lancefleet.tomlKey" $k) (include "lancefleet.tomlValue" (get $m $k))) -}}
{{- end -}}
{ {{- join ", " $items -}} }
{{- else -}}
{{- fail (printf "cannot write %v as TOML" .) -}}
{{- end -}}
{{- end -}}
