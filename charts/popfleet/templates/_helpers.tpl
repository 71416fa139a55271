{{/* Names: 63 characters at most (DNS labels), trailing dashes trimmed. */}}
{{- define "popfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "popfleet.fullname" -}}
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

{{- define "popfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "popfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "popfleet.leaseName" -}}
{{- default (include "popfleet.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Selector labels never change after install (a Deployment's selector is immutable). */}}
{{- define "popfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "popfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "popfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "popfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: popfleet
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "popfleet.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Rules for the namespaces the operator watches: exactly the API calls it makes (operator/src). */}}
{{- define "popfleet.rules" -}}
# Watches and reads Pop3Clusters; patches them to add/remove its finalizer (popfleet.io/keyspace).
- apiGroups: ["popfleet.io"]
  resources: ["pop3clusters"]
  verbs: ["get", "list", "watch", "patch"]
# Writes the status by server-side apply.
- apiGroups: ["popfleet.io"]
  resources: ["pop3clusters/status"]
  verbs: ["patch"]
# Children carry an ownerReference with blockOwnerDeletion; with the OwnerReferencesPermissionEnforcement
# admission plugin that needs update on the owner's finalizers.
- apiGroups: ["popfleet.io"]
  resources: ["pop3clusters/finalizers"]
  verbs: ["update"]
# Per datacenter children: server-side apply (patch; create when the object is new), watched through
# owns(), read while paused (get), pruned when a datacenter leaves the spec (delete).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Per datacenter NetworkPolicy in front of the pop3d pods: server-side apply (patch; create when new),
# watched through owns(), deleted when a datacenter leaves the spec or spec.networkPolicy.enabled is
# false. Never read one by one (no get).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Reads the TLS, Cassandra credentials and admin token Secrets a Pop3Cluster names, and watches each of them
# by name (fieldSelector metadata.name, metadata only) so a renewed certificate, rotated password or rotated
# token reconciles its clusters. RBAC authorizes such a list/watch against resourceNames, so with
# rbac.secretNames the operator can read no other Secret; without it (the names are only known once
# Pop3Clusters exist) any Secret in reach (watchNamespace: that namespace).
- apiGroups: [""]
  resources: ["secrets"]
  {{- with .Values.rbac.secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
  verbs: ["get", "list", "watch"]
# Creates a cluster's admin token Secret (<cluster>-admin-token) once when the spec names none (RBAC cannot
# restrict create by name); never updates, patches or deletes a Secret (the garbage collector removes the
# generated one with its Pop3Cluster).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# kube-runtime's event Recorder: create, then patch to count repeats (series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
