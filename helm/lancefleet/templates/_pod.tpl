{{/*
The pod template every LanceFleet role shares: (dict "ctx" $ "role" "query-node").
Role-specific pieces (ports, env, volumes, lifecycle) are chosen here by role name; the
global block's pod settings are merged with the role's.
*/}}
{{- define "lancefleet.podTemplate" -}}
{{- $ctx := .ctx -}}
{{- $role := .role -}}
{{- $g := $ctx.Values.global -}}
{{- $v := include "lancefleet.roleValues" . | fromJson -}}
{{- $name := include "lancefleet.componentName" (dict "ctx" $ctx "component" $role) -}}
{{- $secretName := include "lancefleet.secretName" $ctx -}}
{{- $podSecurity := mergeOverwrite (deepCopy (default dict $g.podSecurityContext)) (deepCopy (default dict $v.podSecurityContext)) -}}
{{- $ports := get (include "lancefleet.ports" $ctx | fromYaml) $role -}}
{{- $configPath := printf "/etc/lancefleet/%s.toml" $role -}}
{{- $preStop := int $v.preStopSleepSeconds -}}
{{- $tls := $ctx.Values.tls.secretName -}}
{{- $etcdTls := $ctx.Values.externalEtcd.tls.secretName -}}
metadata:
  labels:
    {{- include "lancefleet.selectorLabels" (dict "ctx" $ctx "component" $role) | nindent 4 }}
    app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
    app.kubernetes.io/part-of: lancefleet
    {{- with mergeOverwrite (deepCopy (default dict $g.podLabels)) (deepCopy (default dict $v.podLabels)) }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "lancefleet.configToml" (dict "ctx" $ctx "role" $role) | sha256sum }}
    checksum/secret: {{ include "lancefleet.secretChecksum" $ctx }}
    {{- with mergeOverwrite (deepCopy (default dict $g.podAnnotations)) (deepCopy (default dict $v.podAnnotations)) }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "lancefleet.serviceAccountName" $ctx }}
  automountServiceAccountToken: {{ $ctx.Values.serviceAccount.automountServiceAccountToken }}
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (default $g.priorityClassName $v.priorityClassName) }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "lancefleet.terminationGracePeriod" (dict "ctx" $ctx "role" $role) }}
  securityContext:
    {{- toYaml $podSecurity | nindent 4 }}
  {{- include "lancefleet.scheduling" (dict "ctx" $ctx "component" $role "values" $v) | trim | nindent 2 }}
  {{- if and (eq $role "plan-executor") (eq $v.cache.volume.type "hostPath") $v.cache.volume.hostPath.fixPermissions }}
  initContainers:
    - name: cache-permissions
      image: {{ include "lancefleet.image" (dict "ctx" $ctx "values" $v) }}
      imagePullPolicy: {{ include "lancefleet.imagePullPolicy" (dict "ctx" $ctx "values" $v) }}
      command: ["chown", "{{ $podSecurity.runAsUser | default 10001 | int }}:{{ $podSecurity.runAsGroup | default 10001 | int }}", {{ $v.cache.mountPath | quote }}]
      securityContext:
        runAsUser: 0
        runAsNonRoot: false
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: [ALL]
          add: [CHOWN]
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          memory: 64Mi
      volumeMounts:
        - name: cache
          mountPath: {{ $v.cache.mountPath }}
  {{- end }}
  containers:
    - name: {{ $role }}
      image: {{ include "lancefleet.image" (dict "ctx" $ctx "values" $v) }}
      imagePullPolicy: {{ include "lancefleet.imagePullPolicy" (dict "ctx" $ctx "values" $v) }}
      command: ["/usr/local/bin/lancefleet"]
      args:
        - {{ $role }}
        - --config
        - {{ $configPath }}
        {{- range $v.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- if eq $role "plan-executor" }}
        # Query nodes reach the executor at the address it registers in etcd: over TLS, by
        # the DNS name its certificate carries.
        - name: LANCEFLEET_EXECUTOR__ADVERTISE_ADDRESS
          {{- if $tls }}
          value: "https://$(POD_NAME).{{ $name }}-headless.{{ $ctx.Release.Namespace }}.svc.{{ $ctx.Values.clusterDomain }}:{{ $ports.grpc }}"
          {{- else }}
          value: "http://$(POD_IP):{{ $ports.grpc }}"
          {{- end }}
        {{- end }}
        {{- with concat (default list $g.extraEnv) (default list $v.extraEnv) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $envFrom := concat (default list $g.extraEnvFrom) (default list $v.extraEnvFrom) }}
      {{- if or $secretName $envFrom }}
      envFrom:
        {{- if $secretName }}
        - secretRef:
            name: {{ $secretName }}
        {{- end }}
        {{- with $envFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        {{- range $portName, $port := $ports }}
        - name: {{ $portName }}
          containerPort: {{ $port }}
          protocol: TCP
        {{- end }}
      {{- range $probe := list "startupProbe" "livenessProbe" "readinessProbe" }}
      {{- with get $v $probe }}
      {{- $check := deepCopy . }}
      {{- if $tls }}
      {{- /* With TLS the query node's `http` port speaks HTTPS (the kubelet does not verify
      certificates), and the kubelet's gRPC probe, plaintext and without a client
      certificate, cannot reach the executor: /health on the metrics port stops answering
      as soon as the executor starts draining, as its gRPC health turns NOT_SERVING. */}}
      {{- if and $check.httpGet (eq $role "query-node") (has (toString $check.httpGet.port) (list "http" (toString $ports.http))) }}
      {{- $_ := set $check.httpGet "scheme" "HTTPS" }}
      {{- end }}
      {{- if and $check.grpc (eq $role "plan-executor") }}
      {{- $_ := unset $check "grpc" }}
      {{- $_ := set $check "httpGet" (dict "path" "/health" "port" "metrics") }}
      {{- end }}
      {{- end }}
      {{ $probe }}:
        {{- toYaml $check | nindent 8 }}
      {{- end }}
      {{- end }}
      {{- if gt $preStop 0 }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", "{{ $preStop }}"]
      {{- end }}
      {{- with $v.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- mergeOverwrite (deepCopy (default dict $g.securityContext)) (deepCopy (default dict $v.securityContext)) | toYaml | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/lancefleet
          readOnly: true
        - name: tmp
          mountPath: /tmp
        {{- if and (eq $role "plan-executor") (ne $v.cache.volume.type "none") }}
        - name: cache
          mountPath: {{ $v.cache.mountPath }}
        {{- end }}
        {{- if and (eq $role "plan-executor") $v.cache.encryption.secretName }}
        - name: cache-key
          mountPath: /etc/lancefleet-cache-key
          readOnly: true
        {{- end }}
        {{- if $tls }}
        - name: tls
          mountPath: {{ include "lancefleet.tlsDir" $ctx }}
          readOnly: true
        {{- end }}
        {{- if $etcdTls }}
        - name: etcd-tls
          mountPath: {{ include "lancefleet.etcdTlsDir" $ctx }}
          readOnly: true
        {{- end }}
        {{- with concat (default list $g.extraVolumeMounts) (default list $v.extraVolumeMounts) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "lancefleet.componentName" (dict "ctx" $ctx "component" "config") }}
        items:
          - key: {{ $role }}.toml
            path: {{ $role }}.toml
    - name: tmp
      emptyDir:
        sizeLimit: {{ default $g.tmpSizeLimit $v.tmpSizeLimit }}
    {{- if eq $role "plan-executor" }}
    {{- if eq $v.cache.volume.type "hostPath" }}
    - name: cache
      hostPath:
        path: {{ $v.cache.volume.hostPath.path }}
        type: {{ $v.cache.volume.hostPath.type }}
    {{- else if eq $v.cache.volume.type "emptyDir" }}
    - name: cache
      emptyDir:
        {{- with $v.cache.volume.emptyDir.medium }}
        medium: {{ . }}
        {{- end }}
        sizeLimit: {{ $v.cache.volume.size }}
    {{- end }}
    {{- with $v.cache.encryption.secretName }}
    - name: cache-key
      secret:
        secretName: {{ . }}
        defaultMode: 0440
        items:
          - key: {{ $v.cache.encryption.secretKey }}
            path: cache.key
    {{- end }}
    {{- end }}
    {{- if $tls }}
    - name: tls
      secret:
        secretName: {{ $tls }}
        defaultMode: 0440
        items:
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
          {{- if $ctx.Values.tls.mutual }}
          - key: ca.crt
            path: ca.crt
          {{- end }}
    {{- end }}
    {{- if $etcdTls }}
    - name: etcd-tls
      secret:
        secretName: {{ $etcdTls }}
        defaultMode: 0440
        items:
          - key: ca.crt
            path: ca.crt
          {{- if $ctx.Values.externalEtcd.tls.clientCertificate }}
          - key: tls.crt
            path: tls.crt
          - key: tls.key
            path: tls.key
          {{- end }}
    {{- end }}
    {{- with concat (default list $g.extraVolumes) (default list $v.extraVolumes) }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/*
nodeSelector, tolerations, affinity and topology spread of a pod:
(dict "ctx" $ "component" "plan-executor" "values" $roleValues). Affinity and spread are the
role's, else the global ones, else a default: prefer one pod of the component per node;
executors and etcd members also spread over zones.
*/}}
{{- define "lancefleet.scheduling" -}}
{{- $g := .ctx.Values.global -}}
{{- $v := .values -}}
{{- with mergeOverwrite (deepCopy (default dict $g.nodeSelector)) (deepCopy (default dict $v.nodeSelector)) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat (default list $g.tolerations) (default list $v.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
affinity:
{{- if $v.affinity }}
  {{- toYaml $v.affinity | nindent 2 }}
{{- else if $g.affinity }}
  {{- toYaml $g.affinity | nindent 2 }}
{{- else }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "lancefleet.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 14 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else if $g.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $g.topologySpreadConstraints | nindent 2 }}
{{- else if has .component (list "plan-executor" "etcd") }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "lancefleet.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 8 }}
{{- end }}
{{- end -}}

{{- define "lancefleet.secretChecksum" -}}
{{- if .Values.secret.existingSecret -}}
{{- printf "existing:%s" .Values.secret.existingSecret | sha256sum -}}
{{- else -}}
{{- include "lancefleet.secretData" . | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* The chart-made Secret's data (stringData), as YAML. */}}
{{- define "lancefleet.secretData" -}}
{{- $data := dict -}}
{{- range $k, $val := .Values.secret.env -}}
{{- $_ := set $data $k (toString $val) -}}
{{- end -}}
{{- with .Values.secret.apiKeys -}}
{{- $_ := set $data "LANCEFLEET_API_KEY" (toString (first .)) -}}
{{- end -}}
{{- if $data -}}
{{- toYaml $data -}}
{{- end -}}
{{- end -}}
