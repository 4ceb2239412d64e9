"""The Kubernetes-native switch controller: a ``ConsumerDeployment`` custom resource says which color should
process, and the replica holding a ``coordination.k8s.io`` Lease makes it so with the existing strategies.

Needs the ``kubernetes`` extra (lightkube). ``pyrallel controller serve --kubernetes`` runs it; the modules:

* ``resource``: the custom resource (spec parsed and validated, status written);
* ``lease``: leader election on a Lease (who may act, and until when);
* ``pods``: a color's instances, found from the pods' labels, IPs and ``control`` ports;
* ``gap``: the controller's estimate of a switch's processing gap;
* ``events``: Kubernetes Events about the custom resource (best effort);
* ``health``: the check behind ``pyrallel controller health`` (Argo Rollouts' pre-promotion analysis);
* ``reconciler``: the loop that ties them together.

Fencing stays in the control topic: the Lease only decides which replica tries; the active-color record's
transactional writer (controller id = the deployment's name) and the generations of the lifecycle commands make
a replica that lost the Lease harmless even if it has not noticed yet.
"""
