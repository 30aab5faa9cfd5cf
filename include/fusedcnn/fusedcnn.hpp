// fusedcnn: header-only convolutional layers for the CPU, with a fused Conv2D -> BatchNorm2D
// (-> ReLU) unit. Include this one header.
#pragma once

#include "fusedcnn/core/allocator.hpp"
#include "fusedcnn/core/error.hpp"
#include "fusedcnn/core/options.hpp"
#include "fusedcnn/core/random.hpp"
#include "fusedcnn/core/shape.hpp"
#include "fusedcnn/core/tensor.hpp"
#include "fusedcnn/core/threading.hpp"
#include "fusedcnn/io/npy.hpp"
#include "fusedcnn/nn/batchnorm2d.hpp"
#include "fusedcnn/nn/conv2d.hpp"
#include "fusedcnn/nn/conv_bn.hpp"
#include "fusedcnn/nn/layout.hpp"
#include "fusedcnn/nn/relu.hpp"
