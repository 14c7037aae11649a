//! Tensors through the collectives with real libtorch (feature `tch`): every supported kind,
//! non-contiguous tensors, unsupported kinds, and gradient averaging with `GradSync`. Ranks are
//! threads of this process.

#![cfg(feature = "tch")]
// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::net::TcpListener;
use std::time::Duration;

use cohort_collectives::torch::{GradSync, TensorError};
use cohort_collectives::{Algorithm, CommOptions, Communicator, ReduceOp, Transport};
use tch::{Device, Kind, Tensor};

fn with_ranks<R: Send + 'static>(size: u32, f: fn(Communicator) -> R) -> Vec<R> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = format!("127.0.0.1:{port}");
    let threads: Vec<_> = (0..size)
        .map(|rank| {
            let store = store.clone();
            std::thread::spawn(move || {
                let comm = Communicator::new(CommOptions {
                    rank,
                    world_size: size,
                    local_rank: rank,
                    local_world_size: size,
                    store,
                    secret: b"0123456789abcdef-torch".to_vec(),
                    plan: None,
                    timeout: Duration::from_secs(60),
                    transport: Transport::Auto,
                    algorithm: Algorithm::Auto,
                    tcp_streams: None,
                    store_fd: None,
                })
                .unwrap();
                f(comm)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn every_supported_kind_allreduces_in_place() {
    with_ranks(3, |comm| {
        let rank = f64::from(comm.rank());
        for kind in [
            Kind::Float,
            Kind::Double,
            Kind::Half,
            Kind::BFloat16,
            Kind::Int,
            Kind::Int64,
            Kind::Uint8,
        ] {
            let mut t = Tensor::ones([5, 7], (kind, Device::Cpu)) * (rank + 1.0);
            comm.allreduce_tensor(&mut t, ReduceOp::Sum).unwrap();
            let want = Tensor::ones([5, 7], (kind, Device::Cpu)) * 6.0;
            assert!(t.equal(&want), "{kind:?}");
        }
    });
}

#[test]
fn non_contiguous_tensors_and_broadcast_work() {
    with_ranks(2, |comm| {
        let base =
            Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]) + f64::from(comm.rank());
        let mut transposed = base.tr();
        assert!(!transposed.is_contiguous());
        comm.allreduce_tensor(&mut transposed, ReduceOp::Max)
            .unwrap();
        let want = (Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]) + 1.0).tr();
        assert!(transposed.equal(&want));
        let mut b = Tensor::full(
            [4],
            f64::from(comm.rank() * 10 + 3),
            (Kind::Int64, Device::Cpu),
        );
        comm.broadcast_tensor(&mut b, 1).unwrap();
        assert!(b.equal(&Tensor::full([4], 13, (Kind::Int64, Device::Cpu))));
    });
}

#[test]
fn unsupported_kinds_are_refused() {
    with_ranks(1, |comm| {
        let mut t = Tensor::ones([2], (Kind::Bool, Device::Cpu));
        let err = comm.allreduce_tensor(&mut t, ReduceOp::Sum).unwrap_err();
        assert!(
            matches!(err, TensorError::UnsupportedKind(Kind::Bool)),
            "{err}"
        );
    });
}

#[test]
fn grad_sync_averages_gradients_across_ranks() {
    let results = with_ranks(4, |comm| {
        let rank = f64::from(comm.rank());
        let a = Tensor::ones([3, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::ones([5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let c = Tensor::ones([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let loss = (&a * rank).sum(Kind::Float)
            + (&b * (2.0 * rank)).sum(Kind::Float)
            + (&c * 0.0).sum(Kind::Float);
        loss.backward();
        // Tiny buckets so several are in flight at once.
        GradSync::new(16)
            .sync(
                &comm,
                &[a.shallow_clone(), b.shallow_clone(), c.shallow_clone()],
            )
            .unwrap();
        (
            Vec::<f32>::try_from(a.grad().reshape([-1])).unwrap(),
            Vec::<f32>::try_from(b.grad()).unwrap(),
        )
    });
    for (a, b) in results {
        assert!(a.iter().all(|&v| v == 1.5), "{a:?}");
        assert!(b.iter().all(|&v| v == 3.0), "{b:?}");
    }
}

/// CUDA tensors go through the staged path (copied to the host, reduced, copied back). Needs
/// a GPU and a libtorch built with CUDA (`scripts/gpu-check` runs it with one); elsewhere it
/// says it was skipped.
#[test]
fn cuda_tensors_are_reduced_through_the_staged_path() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no CUDA device or this libtorch has no CUDA (scripts/gpu-check runs it on a GPU machine)");
        return;
    }
    let sums = with_ranks(2, |comm| {
        let device = Device::Cuda(0);
        let mut t = Tensor::ones([1 << 20], (Kind::Float, device)) * f64::from(comm.rank() + 1);
        comm.allreduce_tensor(&mut t, ReduceOp::Sum).unwrap();
        assert_eq!(t.device(), device);
        let mut b = Tensor::full([16], f64::from(comm.rank()), (Kind::BFloat16, device));
        comm.broadcast_tensor(&mut b, 1).unwrap();
        assert!(b.equal(&Tensor::ones([16], (Kind::BFloat16, device))));
        t.sum(Kind::Double).double_value(&[])
    });
    assert_eq!(sums, [3.0 * f64::from(1 << 20); 2]);
}
