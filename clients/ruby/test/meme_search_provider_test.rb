# frozen_string_literal: true

require_relative "test_helper"
require "fileutils"
require "tmpdir"
require_relative "../examples/meme_search/moondream_provider"

# examples/meme_search/moondream_provider.rb against a real server (`--model test`, whose
# answers are deterministic: engine/test_model.cc), with memes written under a temporary
# public/memes tree the way meme_search keeps them.
class MemeSearchProviderTest < Minitest::Test
  Provider = ImageDescriptionProviders::MoondreamProvider
  REAL_IMAGES = File.join(ServerProcess.fixtures_dir, "real", "images")
  # file under public/memes => the fixture it is a copy of
  MEMES = {
    "example_memes/wide.png" => TestImages.path("img2_1200x300.png"),
    "example_memes/hubble.jpg" => File.join(REAL_IMAGES, "p0_hubble_1000x872.jpg"),
    "direct-uploads/anim.gif" => File.join(REAL_IMAGES, "p2_meme_anim.gif")
  }.freeze
  # The test model answers a Query with "you asked “<question>” about a <W>×<H> <colour> image".
  ANSWERS = {
    "example_memes/wide.png" => "1200×300 olive",
    "example_memes/hubble.jpg" => "1000×872 black",
    "direct-uploads/anim.gif" => "14×25 gray"
  }.freeze

  ImagePath = Struct.new(:name)
  ImageCore = Struct.new(:image_path, :name)

  def setup
    @root = Dir.mktmpdir("meme_search")
    @memes = File.join(@root, "public", "memes")
    MEMES.each do |name, source|
      FileUtils.mkdir_p(File.dirname(File.join(@memes, name)))
      FileUtils.cp(source, File.join(@memes, name))
    end
  end

  def teardown
    FileUtils.remove_entry(@root)
  end

  def server
    SharedServers.get(:test, "--model", "test")
  end

  def provider(**options)
    client = Moondream::Client.new(target: server.address, timeout: 30)
    Provider.new(client: client, memes_root: @memes, model: "test", **options)
  end

  def expected(name)
    "you asked “#{Provider::PROMPT}” about a #{ANSWERS.fetch(name)} image"
  end

  def test_describes_each_meme_with_meme_search_prompt
    p = provider
    MEMES.each_key do |name|
      assert_equal expected(name), p.describe(name), name
    end
  end

  def test_describe_image_core_and_absolute_paths_inside_the_memes_folder
    p = provider
    core = ImageCore.new(ImagePath.new("example_memes"), "hubble.jpg")
    assert_equal expected("example_memes/hubble.jpg"), p.describe_image_core(core)
    assert_equal expected("direct-uploads/anim.gif"), p.describe(File.join(@memes, "direct-uploads/anim.gif"))
  end

  def test_the_gif_is_sent_as_is_and_decoded_by_the_server
    bytes = File.binread(File.join(@memes, "direct-uploads/anim.gif"))
    assert bytes.start_with?("GIF89a".b) || bytes.start_with?("GIF87a".b)
    direct = Moondream::Client.new(target: server.address).query(bytes, Provider::PROMPT,
                                                                  model: "test", max_tokens: 160)
    assert_equal direct.answer, provider.describe("direct-uploads/anim.gif")
  end

  def test_max_tokens_caps_the_description
    description = provider(max_tokens: 3).describe("example_memes/wide.png")
    assert_equal "you asked “Describe", description
  end

  def test_missing_files_and_paths_outside_the_memes_folder_are_refused
    p = provider
    err = assert_raises(ArgumentError) { p.describe("example_memes/missing.jpg") }
    assert_match(/Image file not found/, err.message)
    assert_raises(ArgumentError) { p.describe("../secret.png") }
    assert_raises(ArgumentError) { p.describe("/etc/hostname") }
  end

  def test_a_file_that_is_not_an_image_is_invalid_argument
    File.write(File.join(@memes, "example_memes/notes.txt"), "not an image")
    assert_raises(Moondream::InvalidArgument) { provider.describe("example_memes/notes.txt") }
  end

  def test_test_connection_passes_against_a_serving_server
    result = provider.test_connection
    assert result.success?, result.message
    refute result.queued?
    assert_match(/model test/, result.message)
  end

  def test_unreachable_server_raises_after_the_retries_within_the_deadline
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
    retries = []
    client = Moondream::Client.new(target: "127.0.0.1:#{port}", timeout: 5, retries: 2,
                                   base_delay: 0.1, max_delay: 0.5,
                                   on_retry: ->(attempt, error, _delay) { retries << [attempt, error.class] })
    p = Provider.new(client: client, memes_root: @memes, model: "test")
    started = Time.now
    # As in retry_test.rb: the last attempt ends as UNAVAILABLE (connection refused) or, if
    # the deadline passes during it on a loaded machine, DEADLINE_EXCEEDED.
    err = assert_raises(Moondream::Unavailable, Moondream::DeadlineExceeded) { p.describe("example_memes/wide.png") }
    assert_operator Time.now - started, :<, 5.0 + 1.0
    assert_equal [[1, Moondream::Unavailable], [2, Moondream::Unavailable]], retries if err.is_a?(Moondream::Unavailable)
    refute p.test_connection.success?
  end

  # docs/meme-search.md shows the provider and the Compose file: they must stay the real ones.
  DOC = File.join(ServerProcess::REPO, "docs", "meme-search.md")

  def test_the_doc_carries_the_provider_verbatim
    doc = File.read(DOC)
    block = doc[/<!-- moondream_provider\.rb: begin[^\n]*-->\n```ruby\n(.*?)```\n<!-- moondream_provider\.rb: end -->/m, 1]
    refute_nil block, "docs/meme-search.md: the moondream_provider.rb block between its markers"
    assert_equal File.read(File.expand_path("../examples/meme_search/moondream_provider.rb", __dir__)), block
  end

  def test_the_doc_compose_snippet_is_deploy_compose_meme_search_yml
    require "yaml"
    snippet = File.read(DOC)[/```yaml\n(services:\n.*?)```/m, 1]
    refute_nil snippet, "docs/meme-search.md: a yaml block starting with services:"
    file = File.join(ServerProcess::REPO, "deploy", "compose", "meme-search.yml")
    assert_equal YAML.safe_load(File.read(file)), YAML.safe_load(snippet)
  end

  def test_client_from_the_environment_is_per_process_with_the_gem_retry_policy
    options = Provider.client_options("MOONDREAM_GRPC_TARGET" => "10.0.0.7:50051",
                                      "MOONDREAM_TIMEOUT" => "90", "MOONDREAM_RETRIES" => "4")
    assert_equal "10.0.0.7:50051", options[:target]
    assert_equal 90.0, options[:timeout]
    assert_equal 4, options[:retries]
    defaults = Provider.client_options({})
    assert_equal "moondream:50051", defaults[:target]
    assert_equal 120.0, defaults[:timeout]

    client = Provider.new(memes_root: @memes).client
    assert_same client, Provider.new(memes_root: @memes).client
    assert_equal 5, client.retry_policy.retries
    assert_equal 5.0, client.retry_policy.max_delay
  end
end
