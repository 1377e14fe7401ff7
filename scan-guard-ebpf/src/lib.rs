//! Build-tracking stub: the program itself is the `scan-guard` binary of this crate,
//! built for the BPF target by the controller's build script.
#![no_std]
