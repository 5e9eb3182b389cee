{{/* Names ---------------------------------------------------------------------------------------------- */}}

{{- define "studioops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "studioops.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "studioops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "studioops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "studioops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "studioops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: studioops
{{- end -}}

{{- define "studioops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "studioops.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "studioops.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "studioops.cnpgClusterName" -}}
{{- default (printf "%s-pg" (include "studioops.fullname" .)) .Values.postgresql.cloudnativepg.clusterName | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* Secrets: a named existing Secret, or one the chart makes from inline values --------------------------- */}}

{{- define "studioops.databaseSecret" -}}
{{- if .Values.postgresql.cloudnativepg.enabled -}}
{{- printf "%s-app" (include "studioops.cnpgClusterName" .) -}}
{{- else if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else if .Values.database.url -}}
{{- printf "%s-database" (include "studioops.fullname" .) -}}
{{- else -}}
{{- fail "studioops: no database. Set database.existingSecret (a Secret with DATABASE_URL), database.url, or postgresql.cloudnativepg.enabled=true" -}}
{{- end -}}
{{- end -}}

{{- define "studioops.databaseSecretKey" -}}
{{- if .Values.postgresql.cloudnativepg.enabled -}}uri{{- else if .Values.database.existingSecret -}}{{ .Values.database.secretKey }}{{- else -}}DATABASE_URL{{- end -}}
{{- end -}}

{{- define "studioops.storageSecret" -}}
{{- if .Values.storage.existingSecret -}}
{{- .Values.storage.existingSecret -}}
{{- else if and .Values.storage.accessKey .Values.storage.secretKey -}}
{{- printf "%s-s3" (include "studioops.fullname" .) -}}
{{- else -}}
{{- fail "studioops: no S3 credentials. Set storage.existingSecret (a Secret with MINIO_ACCESS_KEY and MINIO_SECRET_KEY), or storage.accessKey and storage.secretKey" -}}
{{- end -}}
{{- end -}}

{{- define "studioops.storageAccessKeyKey" -}}
{{- if .Values.storage.existingSecret -}}{{ .Values.storage.accessKeyKey }}{{- else -}}MINIO_ACCESS_KEY{{- end -}}
{{- end -}}

{{- define "studioops.storageSecretKeyKey" -}}
{{- if .Values.storage.existingSecret -}}{{ .Values.storage.secretKeyKey }}{{- else -}}MINIO_SECRET_KEY{{- end -}}
{{- end -}}

{{- define "studioops.langfuseSecret" -}}
{{- if .Values.langfuse.existingSecret -}}
{{- .Values.langfuse.existingSecret -}}
{{- else if and .Values.langfuse.publicKey .Values.langfuse.secretKey -}}
{{- printf "%s-langfuse" (include "studioops.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Hook resources exist before the release's own: Jobs run before install and upgrade. */}}
{{- define "studioops.preHookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation
{{- end -}}

{{/* The storage endpoint's host and port, for the NetworkPolicy and the CNPG ObjectStore. */}}
{{- define "studioops.storagePort" -}}
{{- $endpoint := .Values.storage.endpoint -}}
{{- $secure := .Values.storage.secure -}}
{{- if hasPrefix "https://" $endpoint -}}{{- $secure = true -}}{{- end -}}
{{- $hostport := $endpoint | trimPrefix "https://" | trimPrefix "http://" | splitList "/" | first -}}
{{- $parts := splitList ":" $hostport -}}
{{- if gt (len $parts) 1 -}}{{ last $parts }}{{- else if $secure -}}443{{- else -}}80{{- end -}}
{{- end -}}

{{- define "studioops.storageURL" -}}
{{- $endpoint := .Values.storage.endpoint -}}
{{- if or (hasPrefix "http://" $endpoint) (hasPrefix "https://" $endpoint) -}}
{{- $endpoint -}}
{{- else -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.storage.secure) $endpoint -}}
{{- end -}}
{{- end -}}

{{/* storage.extraBuckets, plus the bucket of CNPG's own backups so that `storage init` creates it first. */}}
{{- define "studioops.extraBuckets" -}}
{{- $buckets := list -}}
{{- range splitList "," .Values.storage.extraBuckets -}}
{{- if trim . -}}{{- $buckets = append $buckets (trim .) -}}{{- end -}}
{{- end -}}
{{- with .Values.postgresql.cloudnativepg -}}
{{- if and .enabled .backup.enabled -}}
{{- $buckets = append $buckets (.backup.destinationPath | trimPrefix "s3://" | splitList "/" | first) -}}
{{- end -}}
{{- end -}}
{{- $buckets | uniq | join "," -}}
{{- end -}}

{{- define "studioops.langfusePort" -}}
{{- $url := .Values.langfuse.host -}}
{{- $hostport := $url | trimPrefix "https://" | trimPrefix "http://" | splitList "/" | first -}}
{{- $parts := splitList ":" $hostport -}}
{{- if gt (len $parts) 1 -}}{{ last $parts }}{{- else if hasPrefix "https://" $url -}}443{{- else -}}80{{- end -}}
{{- end -}}

{{/* Pod Security "restricted", for every pod and container of the chart -------------------------------- */}}

{{- define "studioops.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "studioops.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The common part of every pod spec: service account, security, /tmp. Call with (list $ sizeLimit). */}}
{{- define "studioops.podCommon" -}}
{{- $ := index . 0 -}}
serviceAccountName: {{ include "studioops.serviceAccountName" $ }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "studioops.podSecurityContext" $ | nindent 2 }}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ index . 1 }}
{{- end -}}

{{- define "studioops.tmpMount" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end -}}

{{/* The environment every container reads: settings from values, secrets only through secretKeyRef.
       Call with (list $ withDatabase): `storage init` needs no database, and runs before a CNPG Cluster exists. */}}
{{- define "studioops.env" -}}
{{- $withDatabase := index . 1 -}}
{{- $root := index . 0 -}}
{{- with $root -}}
- name: STUDIOOPS_ENV
  value: production
- name: STUDIOOPS_HOME
  value: /tmp/studioops
- name: HOME
  value: /tmp
{{- if $withDatabase }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "studioops.databaseSecret" . }}
      key: {{ include "studioops.databaseSecretKey" . }}
{{- end }}
- name: MINIO_ENDPOINT
  value: {{ .Values.storage.endpoint | quote }}
- name: MINIO_SECURE
  value: {{ .Values.storage.secure | quote }}
- name: MINIO_REGION
  value: {{ .Values.storage.region | quote }}
- name: MINIO_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "studioops.storageSecret" . }}
      key: {{ include "studioops.storageAccessKeyKey" . }}
- name: MINIO_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "studioops.storageSecret" . }}
      key: {{ include "studioops.storageSecretKeyKey" . }}
- name: STORAGE_PUBLIC_BUCKETS
  value: {{ .Values.storage.publicBuckets | quote }}
- name: STORAGE_EXTRA_BUCKETS
  value: {{ include "studioops.extraBuckets" . | quote }}
- name: LANGFUSE_HOST
  value: {{ .Values.langfuse.host | quote }}
{{- with include "studioops.langfuseSecret" . }}
- name: LANGFUSE_PUBLIC_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ ternary $root.Values.langfuse.publicKeyKey "LANGFUSE_PUBLIC_KEY" (not (empty $root.Values.langfuse.existingSecret)) }}
- name: LANGFUSE_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ ternary $root.Values.langfuse.secretKeyKey "LANGFUSE_SECRET_KEY" (not (empty $root.Values.langfuse.existingSecret)) }}
{{- end }}
- name: BACKUP_KEEP_DAILY
  value: {{ .Values.backups.keepDaily | quote }}
- name: BACKUP_KEEP_WEEKLY
  value: {{ .Values.backups.keepWeekly | quote }}
- name: BACKUP_UPLOAD
  value: "true"
- name: BACKUP_ZSTD_LEVEL
  value: {{ .Values.backups.zstdLevel | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A one-shot container running a studioops command. Call with (list $ args resources withDatabase). */}}
{{- define "studioops.commandContainer" -}}
{{- $ := index . 0 -}}
- name: studioops
  image: {{ include "studioops.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  command: ["studioops"]
  args: {{ index . 1 | toJson }}
  env:
    {{- include "studioops.env" (list $ (index . 3)) | nindent 4 }}
  securityContext:
    {{- include "studioops.containerSecurityContext" $ | nindent 4 }}
  resources:
    {{- toYaml (index . 2) | nindent 4 }}
  {{- include "studioops.tmpMount" $ | nindent 2 }}
{{- end -}}
