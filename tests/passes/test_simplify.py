"""`simplify`: algebraic identities, each on a tiny graph written as text."""

from __future__ import annotations

from .helpers import check_pass


def test_transpose_of_the_same_transpose_is_removed():
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3,4]) {
          %transpose0 = transpose(%x) {d0=0, d1=1} : f32[3,2,4]
          %transpose1 = transpose(%transpose0) {d0=0, d1=1} : f32[2,3,4]
          %transpose2 = transpose(%transpose0) {d0=1, d1=2} : f32[3,4,2]
          %tanh0 = tanh(%transpose1) : f32[2,3,4]
          return (%tanh0, %transpose2)
        }
        """,
        # transpose2 swaps other dims: it stays, and so does the transpose it reads.
        """
        graph(%x: f32[2,3,4]) {
          %transpose0 = transpose(%x) {d0=0, d1=1} : f32[3,2,4]
          %transpose2 = transpose(%transpose0) {d0=1, d1=2} : f32[3,4,2]
          %tanh0 = tanh(%x) : f32[2,3,4]
          return (%tanh0, %transpose2)
        }
        """,
    )


def test_identity_operands_are_removed_and_their_constants_pruned():
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3]) {
          %c0 = const() {fill=0.0} : f32[]
          %c1 = const() {fill=1.0} : f32[]
          %mul0 = mul(%x, %c1) : f32[2,3]
          %mul1 = mul(%c1, %mul0) : f32[2,3]
          %div0 = div(%mul1, %c1) : f32[2,3]
          %add0 = add(%div0, %c0) : f32[2,3]
          %add1 = add(%c0, %add0) : f32[2,3]
          %sub0 = sub(%add1, %c0) : f32[2,3]
          %tanh0 = tanh(%sub0) : f32[2,3]
          return (%tanh0)
        }
        """,
        """
        graph(%x: f32[2,3]) {
          %tanh0 = tanh(%x) : f32[2,3]
          return (%tanh0)
        }
        """,
    )


def test_identities_that_would_change_a_value_shape_or_dtype_are_kept():
    # 0 - x and 1 / x are not x; y + zeros(2, 3) broadcasts y; x * 1.0 (f64) promotes to f64;
    # a constant with one 1 among other values is not the identity.
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3], %y: f32[3]) {
          %c0 = const() {fill=0.0} : f32[2,3]
          %c1 = const() {fill=1.0} : f32[]
          %c2 = const() {fill=1.0} : f64[]
          %c3 = const() {value=[1.0, 0.0, 1.0]} : f32[3]
          %add0 = add(%y, %c0) : f32[2,3]
          %sub0 = sub(%c0, %x) : f32[2,3]
          %div0 = div(%c1, %x) : f32[2,3]
          %mul0 = mul(%x, %c2) : f64[2,3]
          %mul1 = mul(%x, %c3) : f32[2,3]
          return (%add0, %sub0, %div0, %mul0, %mul1)
        }
        """,
    )


def test_permutes_compose_and_the_identity_permute_is_removed():
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3,4]) {
          %permute0 = permute(%x) {dims=(2, 0, 1)} : f32[4,2,3]
          %permute1 = permute(%permute0) {dims=(0, 2, 1)} : f32[4,3,2]
          %permute2 = permute(%x) {dims=(0, 1, 2)} : f32[2,3,4]
          %tanh0 = tanh(%permute2) : f32[2,3,4]
          return (%tanh0, %permute1)
        }
        """,
        """
        graph(%x: f32[2,3,4]) {
          %tanh0 = tanh(%x) : f32[2,3,4]
          %permute3 = permute(%x) {dims=(2, 1, 0)} : f32[4,3,2]
          return (%tanh0, %permute3)
        }
        """,
    )


def test_permutes_that_compose_to_the_identity_are_removed_in_one_run():
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3,4]) {
          %permute0 = permute(%x) {dims=(1, 2, 0)} : f32[3,4,2]
          %permute1 = permute(%permute0) {dims=(2, 0, 1)} : f32[2,3,4]
          return (%permute1)
        }
        """,
        """
        graph(%x: f32[2,3,4]) {
          return (%x)
        }
        """,
    )


def test_reshapes_that_compose_to_the_identity_are_removed_in_one_run():
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3]) {
          %reshape0 = reshape(%x) {shape=(3, 2)} : f32[3,2]
          %reshape1 = reshape(%reshape0) {shape=(2, 3)} : f32[2,3]
          return (%reshape1)
        }
        """,
        """
        graph(%x: f32[2,3]) {
          return (%x)
        }
        """,
    )


def test_shape_ops_to_the_same_shape_are_removed_and_reshapes_compose():
    # reshape1 has another user (tanh0), so reshape(reshape(x)) becomes a new reshape of x.
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3]) {
          %reshape0 = reshape(%x) {shape=(2, 3)} : f32[2,3]
          %broadcast_to0 = broadcast_to(%reshape0) {shape=(2, 3)} : f32[2,3]
          %sum_to0 = sum_to(%broadcast_to0) {shape=(2, 3)} : f32[2,3]
          %reshape1 = reshape(%x) {shape=(3, 2)} : f32[3,2]
          %reshape2 = reshape(%reshape1) {shape=(6,)} : f32[6]
          %tanh0 = tanh(%reshape1) : f32[3,2]
          %broadcast_to1 = broadcast_to(%sum_to0) {shape=(4, 2, 3)} : f32[4,2,3]
          return (%broadcast_to1, %reshape2, %tanh0)
        }
        """,
        """
        graph(%x: f32[2,3]) {
          %reshape1 = reshape(%x) {shape=(3, 2)} : f32[3,2]
          %tanh0 = tanh(%reshape1) : f32[3,2]
          %broadcast_to1 = broadcast_to(%x) {shape=(4, 2, 3)} : f32[4,2,3]
          %reshape0 = reshape(%x) {shape=(6,)} : f32[6]
          return (%broadcast_to1, %reshape0, %tanh0)
        }
        """,
    )


def test_stack_of_every_step_in_order_is_the_sequence_itself():
    check_pass(
        "simplify",
        """
        graph(%xs: f32[3,2,4]) {
          %getitem0 = getitem(%xs) {index=[0]} : f32[2,4]
          %getitem1 = getitem(%xs) {index=[1]} : f32[2,4]
          %getitem2 = getitem(%xs) {index=[2, :]} : f32[2,4]
          %stack0 = stack(%getitem0, %getitem1, %getitem2) {dim=0} : f32[3,2,4]
          %tanh0 = tanh(%stack0) : f32[3,2,4]
          return (%tanh0)
        }
        """,
        """
        graph(%xs: f32[3,2,4]) {
          %tanh0 = tanh(%xs) : f32[3,2,4]
          return (%tanh0)
        }
        """,
    )


def test_stacks_that_are_not_the_whole_sequence_in_order_are_kept():
    # Only two of three steps; steps out of order; stacked on dim 1.
    check_pass(
        "simplify",
        """
        graph(%xs: f32[3,2,4]) {
          %getitem0 = getitem(%xs) {index=[0]} : f32[2,4]
          %getitem1 = getitem(%xs) {index=[1]} : f32[2,4]
          %getitem2 = getitem(%xs) {index=[2]} : f32[2,4]
          %stack0 = stack(%getitem0, %getitem1) {dim=0} : f32[2,2,4]
          %stack1 = stack(%getitem1, %getitem0, %getitem2) {dim=0} : f32[3,2,4]
          %stack2 = stack(%getitem0, %getitem1, %getitem2) {dim=1} : f32[2,3,4]
          return (%stack0, %stack1, %stack2)
        }
        """,
    )


def test_a_graph_without_identities_is_unchanged():
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3], %w: f32[3,3] param) {
          %c0 = const() {fill=2.0} : f32[]
          %matmul0 = matmul(%x, %w) : f32[2,3]
          %mul0 = mul(%matmul0, %c0) : f32[2,3]
          %transpose0 = transpose(%mul0) {d0=0, d1=1} : f32[3,2]
          return (%transpose0)
        }
        """,
    )


def test_gradients_of_slices_that_tile_a_tensor_become_one_cat():
    check_pass(
        "simplify",
        """
        graph(%a: f32[4,2], %b: f32[4,3]) {
          %getitem_grad0 = getitem_grad(%b) {index=[:, 2:5], shape=(4, 5)} : f32[4,5]
          %getitem_grad1 = getitem_grad(%a) {index=[:, 0:2], shape=(4, 5)} : f32[4,5]
          %add0 = add(%getitem_grad0, %getitem_grad1) : f32[4,5]
          return (%add0)
        }
        """,
        """
        graph(%a: f32[4,2], %b: f32[4,3]) {
          %cat0 = cat(%a, %b) {dim=1} : f32[4,5]
          return (%cat0)
        }
        """,
    )


def test_gradients_of_slices_that_overlap_or_leave_gaps_stay_sums():
    graph = """
        graph(%a: f32[4,2], %b: f32[4,2], %c: f32[2,5]) {
          %getitem_grad0 = getitem_grad(%a) {index=[:, 0:2], shape=(4, 5)} : f32[4,5]
          %getitem_grad1 = getitem_grad(%b) {index=[:, 3:5], shape=(4, 5)} : f32[4,5]
          %add0 = add(%getitem_grad0, %getitem_grad1) : f32[4,5]
          %getitem_grad2 = getitem_grad(%c) {index=[0:2], shape=(4, 5)} : f32[4,5]
          %add1 = add(%getitem_grad0, %getitem_grad2) : f32[4,5]
          return (%add0, %add1)
        }
        """
    # add0 leaves column 2 out; add1's slices are on different dims and overlap.
    check_pass("simplify", graph)


def test_a_transposed_product_of_a_transpose_is_made_in_its_own_layout():
    # the gradient of W in x @ W.T: (x.T @ g).T is g.T @ x, with no transposed copy of the result
    check_pass(
        "simplify",
        """
        graph(%x: f32[12,57], %g: f32[12,128]) {
          %transpose0 = transpose(%x) {d0=0, d1=1} : f32[57,12]
          %matmul0 = matmul(%transpose0, %g) : f32[57,128]
          %transpose1 = transpose(%matmul0) {d0=0, d1=1} : f32[128,57]
          return (%transpose1)
        }
        """,
        """
        graph(%x: f32[12,57], %g: f32[12,128]) {
          %transpose2 = transpose(%g) {d0=0, d1=1} : f32[128,12]
          %matmul1 = matmul(%transpose2, %x) : f32[128,57]
          return (%matmul1)
        }
        """,
    )


def test_a_transposed_product_read_elsewhere_or_of_a_plain_operand_is_kept():
    check_pass(
        "simplify",
        """
        graph(%x: f32[12,57], %g: f32[12,128], %y: f32[57,12]) {
          %transpose0 = transpose(%x) {d0=0, d1=1} : f32[57,12]
          %matmul0 = matmul(%transpose0, %g) : f32[57,128]
          %transpose1 = transpose(%matmul0) {d0=0, d1=1} : f32[128,57]
          %matmul1 = matmul(%y, %g) : f32[57,128]
          %transpose2 = transpose(%matmul1) {d0=0, d1=1} : f32[128,57]
          return (%transpose1, %matmul0, %transpose2)
        }
        """,
    )


def test_a_transposed_product_of_a_transpose_naming_one_dim_twice_is_kept():
    # transpose(x, 0, 0) is x itself: the product is x @ g, not x.T @ g
    check_pass(
        "simplify",
        """
        graph(%x: f32[3,3], %g: f32[3,3]) {
          %transpose0 = transpose(%x) {d0=0, d1=0} : f32[3,3]
          %matmul0 = matmul(%transpose0, %g) : f32[3,3]
          %transpose1 = transpose(%matmul0) {d0=1, d1=-2} : f32[3,3]
          return (%transpose1)
        }
        """,
    )


def test_a_transposed_cat_of_a_product_becomes_a_cat_of_transposed_pieces():
    # a split weight's gradient, returned in the weight's layout: each piece transposed, so that
    # the product is made in that layout (and, compiled, straight into its slice of the cat)
    check_pass(
        "simplify",
        """
        graph(%h: f32[12,128], %g: f32[12,128], %e: f32[57,128]) {
          %transpose0 = transpose(%h) {d0=0, d1=1} : f32[128,12]
          %matmul0 = matmul(%transpose0, %g) : f32[128,128]
          %cat0 = cat(%e, %matmul0) {dim=0} : f32[185,128]
          %transpose1 = transpose(%cat0) {d0=0, d1=1} : f32[128,185]
          return (%transpose1)
        }
        """,
        """
        graph(%h: f32[12,128], %g: f32[12,128], %e: f32[57,128]) {
          %transpose2 = transpose(%e) {d0=0, d1=1} : f32[128,57]
          %transpose4 = transpose(%g) {d0=0, d1=1} : f32[128,12]
          %matmul1 = matmul(%transpose4, %h) : f32[128,128]
          %cat1 = cat(%transpose2, %matmul1) {dim=1} : f32[128,185]
          return (%cat1)
        }
        """,
    )


def test_a_transposed_cat_read_elsewhere_or_of_plain_values_is_kept():
    # cat0 is an output too; cat1's pieces are inputs: nothing would land in place
    check_pass(
        "simplify",
        """
        graph(%a: f32[3,4], %b: f32[4,4], %c: f32[4,4]) {
          %matmul0 = matmul(%a, %b) : f32[3,4]
          %cat0 = cat(%matmul0, %c) {dim=0} : f32[7,4]
          %transpose0 = transpose(%cat0) {d0=0, d1=1} : f32[4,7]
          %cat1 = cat(%b, %c) {dim=0} : f32[8,4]
          %transpose1 = transpose(%cat1) {d0=0, d1=1} : f32[4,8]
          return (%transpose0, %cat0, %transpose1)
        }
        """,
    )


def test_products_with_one_left_operand_side_by_side_become_one_product():
    # a split weight's gradient: d.T @ x and d.T @ h_prev over 12 rows, as d.T @ cat(x, h_prev)
    # (the cat copies 12 rows instead of 128); the transposes of one value count as one operand
    check_pass(
        "simplify",
        """
        graph(%d: f32[12,128], %x: f32[12,57], %h: f32[12,128]) {
          %transpose0 = transpose(%d) {d0=0, d1=1} : f32[128,12]
          %transpose1 = transpose(%d) {d0=0, d1=1} : f32[128,12]
          %matmul0 = matmul(%transpose0, %x) : f32[128,57]
          %matmul1 = matmul(%transpose1, %h) : f32[128,128]
          %cat0 = cat(%matmul0, %matmul1) {dim=1} : f32[128,185]
          return (%cat0)
        }
        """,
        """
        graph(%d: f32[12,128], %x: f32[12,57], %h: f32[12,128]) {
          %transpose0 = transpose(%d) {d0=0, d1=1} : f32[128,12]
          %cat1 = cat(%x, %h) {dim=1} : f32[12,185]
          %matmul2 = matmul(%transpose0, %cat1) : f32[128,185]
          return (%matmul2)
        }
        """,
    )


def test_products_side_by_side_stay_apart_when_their_operands_are_the_larger_copy():
    # 2048 rows of operands against 128 of results: the results' cat is the cheaper copy
    check_pass(
        "simplify",
        """
        graph(%d: f32[2048,128], %x: f32[2048,57], %h: f32[2048,128]) {
          %transpose0 = transpose(%d) {d0=0, d1=1} : f32[128,2048]
          %matmul0 = matmul(%transpose0, %x) : f32[128,57]
          %matmul1 = matmul(%transpose0, %h) : f32[128,128]
          %cat0 = cat(%matmul0, %matmul1) {dim=1} : f32[128,185]
          return (%cat0)
        }
        """,
    )


def test_a_product_with_rows_of_zeros_skips_them():
    # d.T @ (the states each step starts from, the first zeros): no cat, one step fewer to sum
    check_pass(
        "simplify",
        """
        graph(%d: f32[8,3], %hs: f32[4,2,3]) {
          %transpose0 = transpose(%d) {d0=0, d1=1} : f32[3,8]
          %c0 = const() {fill=0.0} : f32[1,2,3]
          %getitem0 = getitem(%hs) {index=[:3]} : f32[3,2,3]
          %cat0 = cat(%c0, %getitem0) {dim=0} : f32[4,2,3]
          %reshape0 = reshape(%cat0) {shape=(8, 3)} : f32[8,3]
          %matmul0 = matmul(%transpose0, %reshape0) : f32[3,3]
          return (%matmul0)
        }
        """,
        """
        graph(%d: f32[8,3], %hs: f32[4,2,3]) {
          %transpose0 = transpose(%d) {d0=0, d1=1} : f32[3,8]
          %getitem0 = getitem(%hs) {index=[:3]} : f32[3,2,3]
          %reshape1 = reshape(%getitem0) {shape=(6, 3)} : f32[6,3]
          %getitem1 = getitem(%transpose0) {index=[:, 2:8]} : f32[3,6]
          %matmul1 = matmul(%getitem1, %reshape1) : f32[3,3]
          return (%matmul1)
        }
        """,
    )


def test_a_product_with_zero_rows_between_others_is_kept():
    # (two products would be needed; a constant with one nonzero is not zeros)
    check_pass(
        "simplify",
        """
        graph(%a: f32[3,4], %x: f32[2,3]) {
          %c0 = const() {value=[[0.0, 0.0, 1.0]]} : f32[1,3]
          %c1 = const() {fill=0.0} : f32[1,3]
          %cat0 = cat(%x, %c1, %c0) {dim=0} : f32[4,3]
          %matmul0 = matmul(%a, %cat0) : f32[3,3]
          return (%matmul0)
        }
        """,
    )


def test_a_loop_sequence_of_zeros_becomes_zeros_in_its_body():
    # (the reverse loop of a backward where only the last state is read: g is zeros at every
    # step) g + carry @ w -> carry @ w, and the loop no longer reads the zero array
    check_pass(
        "simplify",
        """
        graph(%hs: f32[3,2,4], %h0: f32[2,4], %w: f32[4,4]) {
          %c0 = const() {fill=0.0} : f32[3,2,4]
          %loop0 = loop(%hs, %c0, %h0, %w) {reverse=True, sequences=2} : f32[3,2,4] graph(%h: f32[2,4], %g: f32[2,4], %carry: f32[2,4], %w_hh: f32[4,4]) {
            %matmul0 = matmul(%carry, %w_hh) : f32[2,4]
            %add0 = add(%g, %matmul0) : f32[2,4]
            %mul0 = mul(%h, %add0) : f32[2,4]
            return (%mul0)
          }
          return (%loop0)
        }
        """,  # noqa: E501
        """
        graph(%hs: f32[3,2,4], %h0: f32[2,4], %w: f32[4,4]) {
          %loop1 = loop(%hs, %h0, %w) {reverse=True, sequences=1} : f32[3,2,4] graph(%h: f32[2,4], %carry: f32[2,4], %w_hh: f32[4,4]) {
            %matmul0 = matmul(%carry, %w_hh) : f32[2,4]
            %mul0 = mul(%h, %matmul0) : f32[2,4]
            return (%mul0)
          }
          return (%loop1)
        }
        """,  # noqa: E501
    )


def test_a_loop_whose_sequences_are_all_zeros_keeps_one_to_count_its_steps():
    check_pass(
        "simplify",
        """
        graph(%h0: f32[2,4]) {
          %c0 = const() {fill=0.0} : f32[3,2,4]
          %c1 = const() {fill=0.0} : f32[3,2,4]
          %loop0 = loop(%c0, %c1, %h0) {sequences=2} : f32[3,2,4] graph(%x: f32[2,4], %y: f32[2,4], %h: f32[2,4]) {
            %add0 = add(%x, %h) : f32[2,4]
            %add1 = add(%add0, %y) : f32[2,4]
            return (%add1)
          }
          return (%loop0)
        }
        """,  # noqa: E501
        """
        graph(%h0: f32[2,4]) {
          %c0 = const() {fill=0.0} : f32[3,2,4]
          %loop1 = loop(%c0, %h0) {sequences=1} : f32[3,2,4] graph(%x: f32[2,4], %h: f32[2,4]) {
            %add0 = add(%x, %h) : f32[2,4]
            return (%add0)
          }
          return (%loop1)
        }
        """,  # noqa: E501
    )


def test_a_cat_of_cats_that_cannot_be_joined_is_kept():
    # (an inner cat that is an output, or along another dim: the rule used to make the same cat
    # again, and simplify never finished)
    check_pass(
        "simplify",
        """
        graph(%x: f32[2,3], %y: f32[2,3]) {
          %cat0 = cat(%x, %y) {dim=0} : f32[4,3]
          %cat1 = cat(%x, %y) {dim=1} : f32[2,6]
          %reshape0 = reshape(%cat1) {shape=(4, 3)} : f32[4,3]
          %cat2 = cat(%cat0, %x) {dim=0} : f32[6,3]
          %cat3 = cat(%cat1, %cat1) {dim=0} : f32[4,6]
          return (%cat0, %cat2, %cat3, %reshape0)
        }
        """,
    )
