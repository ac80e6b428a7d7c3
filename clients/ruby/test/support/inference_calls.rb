# frozen_string_literal: true

# Every Moondream RPC through Moondream::Client, shared by the `test` model and the tiny
# fixture checkpoint. Including classes define #client and #model_name.
# Expected texts are never hard-coded: unary, streamed and handle-based results of the
# same greedy request must agree with each other.
module InferenceCalls
  MAX_TOKENS = 12

  # Including classes may override with a smaller image (fewer crops, faster encodes).
  def image_path
    TestImages.path
  end

  def image_bytes
    File.binread(image_path)
  end

  def test_caption_returns_text_usage_and_timings
    r = client.caption(image_path, length: :short, max_tokens: MAX_TOKENS)
    assert_kind_of String, r.caption
    assert_equal model_name, r.model
    assert_operator r.usage.generated_tokens, :<=, MAX_TOKENS
    assert_equal r.usage.generated_tokens.zero?, r.caption.empty?
    assert_operator r.usage.image_tokens, :>, 0
    assert_operator r.timings.total_ms, :>, 0
    refute_equal :FINISH_REASON_UNSPECIFIED, r.finish_reason
  end

  def test_caption_accepts_path_pathname_io_and_bytes_alike
    expected = client.caption(image_path, max_tokens: MAX_TOKENS).caption
    assert_equal expected, client.caption(Pathname.new(image_path), max_tokens: MAX_TOKENS).caption
    File.open(image_path, "rb") do |io|
      assert_equal expected, client.caption(io, max_tokens: MAX_TOKENS).caption
    end
    assert_equal expected, client.caption(image_bytes, max_tokens: MAX_TOKENS).caption
  end

  def test_max_tokens_limits_generation
    full = client.caption(image_path, max_tokens: MAX_TOKENS)
    skip "#{model_name} stops after #{full.usage.generated_tokens} token(s)" if full.usage.generated_tokens < 2
    r = client.caption(image_path, max_tokens: 1)
    assert_equal 1, r.usage.generated_tokens
    assert_equal :FINISH_REASON_LENGTH, r.finish_reason
    assert full.caption.start_with?(r.caption), "greedy prefix: #{r.caption.inspect} vs #{full.caption.inspect}"
  end

  def test_query_answers
    r = client.query(image_path, "What is in the image?", max_tokens: MAX_TOKENS)
    assert_kind_of String, r.answer
    assert_equal model_name, r.model
    assert_operator r.usage.prompt_tokens, :>, 0
    assert_operator r.usage.generated_tokens, :<=, MAX_TOKENS
  end

  def test_stream_caption_with_block_matches_unary
    unary = client.caption(image_path, max_tokens: MAX_TOKENS)
    texts = []
    final = client.stream_caption(image_path, max_tokens: MAX_TOKENS) { |chunk| texts << chunk.text }
    assert_equal unary.caption, texts.join
    assert final.final, "the returned chunk is the final one"
    assert_equal model_name, final.model
    assert_equal unary.usage.generated_tokens, final.usage.generated_tokens
    assert_equal unary.finish_reason, final.finish_reason
  end

  def test_stream_query_as_enumerator_matches_unary
    question = "Describe the colours."
    unary = client.query(image_bytes, question, max_tokens: MAX_TOKENS)
    enum = client.stream_query(image_bytes, question, max_tokens: MAX_TOKENS)
    assert_kind_of Enumerator, enum
    chunks = enum.to_a
    assert_equal unary.answer, chunks.map(&:text).join
    assert chunks.last.final
    assert_equal 1, chunks.count(&:final)
  end

  def test_detect_returns_normalized_boxes
    r = client.detect(image_path, "face", max_objects: 3)
    assert_equal model_name, r.model
    assert_operator r.objects.size, :<=, 3
    r.objects.each do |box|
      assert_operator box.x_min, :<=, box.x_max
      assert_operator box.y_min, :<=, box.y_max
    end
  end

  def test_point_returns_normalized_points
    r = client.point(image_path, "face", max_objects: 3)
    assert_equal model_name, r.model
    assert_operator r.points.size, :<=, 3
    r.points.each { |p| assert_kind_of Float, p.x }
  end

  def test_encode_image_handle_gives_same_results_as_bytes
    handle = client.encode_image(image_path)
    assert_kind_of Moondream::Handle, handle
    refute_empty handle.id
    assert_equal model_name, handle.model
    by_bytes = client.caption(image_path, max_tokens: MAX_TOKENS)
    by_handle = client.caption(handle, max_tokens: MAX_TOKENS)
    assert_equal by_bytes.caption, by_handle.caption
    assert_equal 0.0, by_handle.timings.vision_encode_ms, "a cached handle skips the vision encoder"
    assert_equal by_bytes.caption, client.caption(handle: handle.id, max_tokens: MAX_TOKENS).caption
    assert_equal client.detect(image_path, "face").objects.size,
                 client.detect(handle, "face").objects.size
  end

  def test_models_and_model
    info = client.models.find { |m| m.name == model_name }
    refute_nil info, "ListModels includes #{model_name}"
    assert_equal info.name, client.model(model_name).name
    assert_equal info.precision, client.model(model_name).precision
  end

  def test_healthy
    assert client.healthy?
    assert client.healthy?(service: Moondream::Client::SERVICE)
  end
end
