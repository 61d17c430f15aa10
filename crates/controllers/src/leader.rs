//! Leader election through a Lease in the federation API, so that several controller-manager
//! replicas can run and one acts: the holder renews the Lease; the others take it over once
//! it has not been renewed for a lease duration. A leader that cannot renew within its
//! deadline stops, as kube-controller-manager does, and is restarted as a candidate.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// The Lease's name, as the original named its lock.
pub const LEASE: &str = "federation-controller-manager-leader-election";

pub struct LeaderElection {
    pub leases: Api<Lease>,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl LeaderElection {
    /// Elections in `namespace` of the federation API, created when missing.
    pub async fn new(
        federation: Client,
        namespace: &str,
        identity: String,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> anyhow::Result<LeaderElection> {
        let namespaces: Api<Namespace> = Api::all(federation.clone());
        if namespaces.get_opt(namespace).await?.is_none() {
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match namespaces.create(&PostParams::default(), &ns).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).context("creating the leader-election namespace"),
            }
        }
        Ok(LeaderElection {
            leases: Api::namespaced(federation, namespace),
            identity,
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews the Lease; returns when it could not be renewed within the deadline, when
    /// this replica must stop acting.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!("another replica holds the lease");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the lease"),
            }
            if last_renewal.elapsed() > self.renew_deadline {
                tracing::warn!("could not renew the lease in time");
                return;
            }
        }
    }

    /// Takes the Lease if it is free or expired, renews it if held; whether this replica
    /// holds it now. A race with another replica is settled by the resourceVersion.
    async fn try_acquire_or_renew(&self) -> anyhow::Result<bool> {
        let seconds = i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.leases.get_opt(LEASE).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            let duration = spec
                .lease_duration_seconds
                .map_or(
                    self.lease_duration,
                    |s| Duration::from_secs(s.max(0) as u64),
                );
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            let expired = renewed.is_none_or(|t| {
                let age = jiff::Timestamp::now().duration_since(t);
                age.as_secs_f64() > duration.as_secs_f64()
            });
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now());
        match self
            .leases
            .replace(LEASE, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
