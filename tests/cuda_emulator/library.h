// For cuBLAS's and cuDNN's stand-ins (cublas.cpp, cudnn.cpp): each call reports the device
// memory it reads and writes on its handle's stream to the driver's stream check (driver.cpp),
// which ends the process where another stream's op conflicts with it unordered.
#pragma once
#include <dlfcn.h>

#include <initializer_list>

static void stream_op(void* stream, const char* op, std::initializer_list<const void*> reads,
                      std::initializer_list<const void*> writes) {
    using Report = void (*)(void*, const char*, const void* const*, int, const void* const*, int);
    // the driver stand-in, loaded already: among the process's global symbols (the tests open
    // it so, and mod.rs's harness links it in), else by its soname (cudarc opens it locally)
    static const Report report = [] {
        if (void* f = dlsym(RTLD_DEFAULT, "cnnlab_emulator_stream_op")) return (Report)f;
        void* driver = dlopen("libcuda.so", RTLD_NOW | RTLD_NOLOAD);
        return driver ? (Report)dlsym(driver, "cnnlab_emulator_stream_op") : nullptr;
    }();
    if (report) report(stream, op, reads.begin(), (int)reads.size(), writes.begin(), (int)writes.size());
}
